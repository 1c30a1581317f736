"""Saved map predictions: the uint8 code keeps every metric threshold
exact, the writer metric writes the documented folder, and
tools/eval_map_predictions.py scores it as BEVMapIoUMetric scores the
unsaved probabilities."""
import json
import pickle

import numpy as np
import pytest
import torch

from fuller.datasets.map_mask_io import MAP_CLASSES, save_map_masks
from fuller.evaluation import map_predictions as mp
from fuller.evaluation.metrics import (DEFAULT_THRESHOLDS,
                                       BEVMapIoUMetric,
                                       BEVMapPredictionWriter)
from fuller.testing import REPO_ROOT, load_script

# non-square, so a swapped axis fails: Y = 6 rows (y), X = 10 columns (x)
GRID = dict(x_range=(-5.0, 5.0), y_range=(-3.0, 3.0), cell_size=1.0)
SHAPE = (len(MAP_CLASSES), 6, 10)


def _tool():
    return load_script(REPO_ROOT / 'tools' / 'eval_map_predictions.py', 'eval_map_predictions')


def _hard_probs(rng, shape):
    """Random float32 probabilities, with many cells exactly on, and one
    float32 step either side of, every metric threshold."""
    probs = rng.random(shape, dtype=np.float32)
    flat = probs.reshape(-1)
    edges = np.array(DEFAULT_THRESHOLDS, dtype=np.float32)
    near = np.concatenate([edges, np.nextafter(edges, np.float32(0)),
                           np.nextafter(edges, np.float32(1)),
                           np.float32([0.0, 1.0])])
    idx = rng.choice(flat.size, size=min(flat.size, 4 * near.size),
                     replace=False)
    flat[idx] = np.resize(near, idx.size)
    return probs


def test_quantisation_is_exact_at_every_metric_threshold():
    probs = _hard_probs(np.random.default_rng(0), (6, 40, 50))
    back = mp.dequantise(mp.quantise(probs))
    assert back.dtype == np.float32
    assert np.all(probs - back >= 0) and np.all(probs - back < 1 / mp.SCALE)
    for t in DEFAULT_THRESHOLDS:  # the comparison the metric makes
        thr = torch.tensor(t, dtype=torch.float32)
        assert torch.equal(torch.from_numpy(back) >= thr,
                           torch.from_numpy(probs) >= thr), t
    assert mp.quantise(np.float32([0.0, 0.35, 0.999, 1.0])).tolist() == \
        [0, 70, 199, 200]
    with pytest.raises(ValueError, match='non-finite'):
        mp.quantise(np.float32([np.nan]))


def test_file_round_trip_and_errors(tmp_path):
    probs = np.random.default_rng(1).random(SHAPE, dtype=np.float32)
    path = str(tmp_path / 'tok.npz')
    mp.save_map_prediction(path, probs, MAP_CLASSES, GRID)
    back, names, grid = mp.load_map_prediction(path)
    assert names == MAP_CLASSES and back.shape == SHAPE
    assert grid.tolist() == [-5.0, 5.0, -3.0, 3.0, 1.0, 1.0]
    assert np.abs(back - probs).max() < 1 / mp.SCALE
    (tmp_path / 'bad.npz').write_bytes(b'not a zip')
    with pytest.raises(mp.MapPredictionFileError, match='corrupt'):
        mp.load_map_prediction(str(tmp_path / 'bad.npz'))
    with pytest.raises(ValueError, match=r'must be \(6, Y, X\)'):
        mp.save_map_prediction(path, probs[:2], MAP_CLASSES, GRID)


@pytest.fixture()
def saved(tmp_path):
    """Three samples: GT masks in a map-mask cache + infos, probabilities
    written by the writer metric, and the in-memory metric on the
    un-quantised probabilities."""
    rng = np.random.default_rng(2)
    tokens = [f'{i:032x}' for i in range(3)]
    infos = dict(metainfo=dict(version='v1.0-mini'), data_list=[])
    writer = BEVMapPredictionWriter(out_dir=str(tmp_path / 'pred'),
                                    grid=GRID, ann_file=None)
    reference = BEVMapIoUMetric()
    for i, token in enumerate(tokens):
        gt = rng.random(SHAPE) < 0.4
        gt[4] = False  # carpark_area absent: NaN IoU, left out of the means
        save_map_masks(str(tmp_path / 'map_masks' / f'{token}.npz'), gt)
        infos['data_list'].append(dict(token=token, sample_idx=i,
                                       map_mask_path=f'map_masks/{token}.npz'))
        probs = torch.from_numpy(_hard_probs(rng, SHAPE))
        probs[4] = 0.0
        sample = dict(pred_masks_bev=probs, token=token)
        writer.process(None, [sample])
        reference.process(None, [dict(pred_masks_bev=probs,
                                      gt_masks_bev=torch.from_numpy(gt))])
    infos_path = tmp_path / 'infos.pkl'
    infos_path.write_bytes(pickle.dumps(infos))
    assert writer.compute_metrics(writer.results) == {}
    expected = reference.compute_metrics(reference.results)
    return tmp_path, infos_path, tokens, expected


def test_writer_folder_format(saved):
    root, _, tokens, _ = saved
    index = json.loads((root / 'pred' / 'index.json').read_text())
    assert index['format'] == 'fuller-map-predictions'
    assert index['shape'] == list(SHAPE) and index['scale'] == 200
    assert index['tokens'] == tokens
    assert index['grid'] == dict(x_range=[-5.0, 5.0], y_range=[-3.0, 3.0],
                                 cell_size=[1.0, 1.0])
    assert sorted(p.name for p in (root / 'pred').iterdir()) == sorted(
        [f'{t}.npz' for t in tokens] + ['index.json'])


def test_tool_scores_exactly_as_the_in_loop_metric(saved, capsys):
    root, infos_path, _, expected = saved
    out = root / 'metrics.json'
    assert _tool().main([str(root / 'pred'), '--infos', str(infos_path),
                         '--out', str(out)]) == 0
    got = json.loads(out.read_text())
    assert set(got) == {f'map/{k}' for k in expected}
    for key, value in expected.items():
        if np.isnan(value):
            assert np.isnan(got[f'map/{key}']), key
        else:
            assert got[f'map/{key}'] == value, key
    assert 0 < got['map/mIoU@0.5'] < 1
    assert 'map/mIoU@0.5' in capsys.readouterr().out


def test_tool_refuses_missing_or_mismatched_predictions(saved, capsys):
    root, infos_path, tokens, _ = saved
    (root / 'pred' / f'{tokens[1]}.npz').unlink()
    assert _tool().main([str(root / 'pred'), '--infos', str(infos_path)]) == 1
    assert f'no prediction for sample {tokens[1]}' in capsys.readouterr().err
    assert _tool().main([str(root), '--infos', str(infos_path)]) == 1
    assert 'index.json not found' in capsys.readouterr().err


def test_writer_checks_shape_and_coverage(tmp_path):
    infos = tmp_path / 'infos.pkl'
    infos.write_bytes(pickle.dumps(dict(data_list=[dict(token='a' * 32),
                                                   dict(token='b' * 32)])))
    writer = BEVMapPredictionWriter(out_dir=str(tmp_path / 'p'), grid=GRID,
                                    ann_file=str(infos))
    with pytest.raises(ValueError, match=r'expected \(6, 6, 10\)'):
        writer.process(None, [dict(pred_masks_bev=torch.zeros(6, 10, 6),
                                   token='a' * 32)])
    writer.process(None, [dict(pred_masks_bev=torch.zeros(SHAPE),
                               token='a' * 32)])
    with pytest.raises(RuntimeError, match='1 samples .* have no map'):
        writer.compute_metrics(writer.results)
