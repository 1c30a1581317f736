"""tools/test.py --format-only: a tiny checkpoint -> a generated v1.0-test
split -> results_nusc.json that the devkit loader accepts and
tools/validate_submission.py passes, plus map predictions; on val the file
and the saved maps score as the in-loop metrics; bad input is refused
before anything is written."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fuller.utils.config_utils import load_config
from fuller.testing import REPO_ROOT, load_script

CONFIG = REPO_ROOT / 'configs' / 'fuller' / 'fuller_tiny_1xb2-24e_synthetic-nus.py'
TEST_PY = REPO_ROOT / 'tools' / 'test.py'


def run_tool(*args, expect=0, timeout=1800):
    proc = subprocess.run([sys.executable, *map(str, args)],
                          capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == expect, out[-4000:]
    return out


def _test_tool():
    return load_script(TEST_PY, 'fuller_test_tool')


def _save_checkpoint(path, classes, note=''):
    """The tiny model's initial weights, saved as mmengine does (no
    training needed to exercise the format path)."""
    from mmengine.registry import init_default_scope

    import fuller  # noqa: F401  (registers the model)
    from mmdet3d.registry import MODELS
    cfg = load_config(str(CONFIG))
    init_default_scope('mmdet3d')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(classes=list(classes)),
                              note=note)),
               path)
    return cfg.class_names


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    classes = load_config(str(CONFIG)).class_names
    path = tmp_path_factory.mktemp('ckpt') / 'tiny.pth'
    _save_checkpoint(path, classes)
    return path


@pytest.fixture(scope='module')
def test_root(tmp_path_factory):
    """A generated v1.0-test dataroot (no annotations) with its infos."""
    from fuller.data_prep import (create_nuscenes_data,
                                  generate_synthetic_nuscenes)
    root = tmp_path_factory.mktemp('nuscenes-test') / 'data'
    generate_synthetic_nuscenes(str(root), num_scenes=1, keyframes_per_scene=2,
                                sweeps_per_keyframe=1, image_size=(352, 198),
                                seed=5, version='v1.0-test')
    create_nuscenes_data(str(root), str(root), 'v1.0-test', progress=False)
    return root


@pytest.fixture(scope='module')
def test_run(ckpt, test_root, tmp_path_factory):
    out = tmp_path_factory.mktemp('submission') / 'out'
    log = run_tool(TEST_PY, CONFIG, ckpt, '--data-root', test_root,
                   '--work-dir', out.parent / 'work', '--format-only',
                   '--out-dir', out, '--cfg-options', 'test_split=True')
    return out, log


@pytest.mark.slow  # one tiny-model inference run on CPU
def test_test_split_submission_is_accepted(test_run, test_root):
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox
    out, log = test_run
    assert sorted(os.listdir(out)) == ['map_predictions', 'results_nusc.json',
                                       'run.json']
    samples = json.loads((test_root / 'v1.0-test' / 'sample.json').read_text())
    assert len(samples) == 2
    boxes, meta = load_prediction(str(out / 'results_nusc.json'), 500,
                                  DetectionBox)
    assert set(boxes.sample_tokens) == {s['token'] for s in samples}
    assert meta == dict(use_camera=True, use_lidar=True, use_radar=False,
                        use_map=False, use_external=False)
    validator = run_tool(REPO_ROOT / 'tools' / 'validate_submission.py',
                         out / 'results_nusc.json', '--dataroot', test_root,
                         '--version', 'v1.0-test', '--split', 'test')
    assert 'VALID' in validator
    index = json.loads((out / 'map_predictions' / 'index.json').read_text())
    assert sorted(index['tokens']) == sorted(s['token'] for s in samples)
    assert index['shape'] == [6, 200, 200]
    run = json.loads((out / 'run.json').read_text())
    assert run['version'] == 'v1.0-test' and run['split'] == 'test'
    assert run['submission']['samples'] == 2


@pytest.mark.slow  # two tiny-model inference runs on CPU
def test_val_file_and_maps_score_as_the_in_loop_metrics(ckpt,
                                                        synthetic_dataroot,
                                                        tmp_path):
    from nuscenes import NuScenes
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval
    common = ('--data-root', synthetic_dataroot, '--work-dir', tmp_path / 'w')
    run_tool(TEST_PY, CONFIG, ckpt, *common, '--out-metrics',
             tmp_path / 'metrics.json')
    in_loop = json.loads((tmp_path / 'metrics.json').read_text())
    out = tmp_path / 'out'
    run_tool(TEST_PY, CONFIG, ckpt, *common, '--format-only', '--out-dir', out)
    nusc = NuScenes('v1.0-mini', str(synthetic_dataroot), verbose=False)
    summary = DetectionEval(nusc, config_factory('detection_cvpr_2019'),
                            str(out / 'results_nusc.json'), 'mini_val',
                            str(tmp_path / 'devkit'),
                            verbose=False).evaluate()[0].serialize()
    key = 'NuScenes metric/pred_instances_3d_NuScenes'
    assert summary['mean_ap'] == pytest.approx(in_loop[f'{key}/mAP'], abs=1e-6)
    assert summary['nd_score'] == pytest.approx(in_loop[f'{key}/NDS'],
                                                abs=1e-6)
    offline = tmp_path / 'map.json'
    run_tool(REPO_ROOT / 'tools' / 'eval_map_predictions.py',
             out / 'map_predictions', '--infos',
             synthetic_dataroot / 'nuscenes_infos_val.pkl', '--config', CONFIG,
             '--out', offline)
    offline = json.loads(offline.read_text())
    map_keys = [k for k in in_loop if k.startswith('map/')]
    assert len(map_keys) == len(offline) > 40
    assert 0 < in_loop['map/mIoU@0.5'] < 1
    for k in map_keys:  # the saved uint8 code keeps every threshold exact
        assert offline[k] == pytest.approx(in_loop[k], abs=0, nan_ok=True), k


@pytest.mark.slow  # two processes, one tiny-model inference each
def test_dist_test_two_cpu_processes_match_one(test_run, ckpt, test_root,
                                               tmp_path):
    """tools/dist_test.sh passes --format-only through; two ranks write the
    same submission and map files as one process."""
    single, _ = test_run
    out = tmp_path / 'ddp'
    from fuller.testing.multiprocess import free_port
    env = dict(os.environ, PORT=str(free_port()),  # torchrun's rendezvous port
               PATH=f'{os.path.dirname(sys.executable)}:{os.environ["PATH"]}')
    proc = subprocess.run(
        ['bash', str(REPO_ROOT / 'tools' / 'dist_test.sh'), str(CONFIG),
         str(ckpt), '2', '--data-root', str(test_root), '--work-dir',
         str(tmp_path / 'w'), '--format-only', '--out-dir', str(out),
         '--test-split'],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=1800)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert sorted(os.listdir(out)) == sorted(os.listdir(single))
    ddp = json.loads((out / 'results_nusc.json').read_text())['results']
    one = json.loads((single / 'results_nusc.json').read_text())['results']
    assert ddp.keys() == one.keys()
    for token in one:
        assert len(ddp[token]) == len(one[token])
        for a, b in zip(ddp[token], one[token]):
            assert a['translation'] == pytest.approx(b['translation'],
                                                     abs=1e-3)
            assert a['detection_name'] == b['detection_name']
    for path in (single / 'map_predictions').glob('*.npz'):
        other = out / 'map_predictions' / path.name
        with np.load(path) as x, np.load(other) as y:
            assert np.abs(x['q'].astype(int) - y['q'].astype(int)).max() <= 1


def _refused(args, match):
    from fuller.evaluation.format_only import FormatOnlyError
    with pytest.raises(FormatOnlyError, match=match):
        _test_tool().main([str(a) for a in args])


def test_val_infos_where_test_infos_are_expected(ckpt, synthetic_dataroot,
                                                 tmp_path):
    out = tmp_path / 'out'
    _refused([CONFIG, ckpt, '--data-root', synthetic_dataroot,
              '--format-only', '--out-dir', out, '--test-split',
              '--cfg-options', 'test_split_ann_file=nuscenes_infos_val.pkl'],
             r'holds v1.0-mini infos \(\d+ of \d+ samples annotated\), but '
             r'the test split was requested')
    assert not out.exists()


def test_test_infos_without_the_test_switch(ckpt, test_root, tmp_path):
    out = tmp_path / 'out'
    _refused([CONFIG, ckpt, '--data-root', test_root, '--format-only',
              '--out-dir', out, '--cfg-options',
              'test_dataloader.dataset.ann_file=nuscenes_infos_test.pkl'],
             'pass --test-split')
    assert not out.exists()


def test_checkpoint_with_other_classes(test_root, tmp_path):
    classes = list(load_config(str(CONFIG)).class_names)
    classes[0], classes[1] = classes[1], classes[0]
    other = tmp_path / 'other.pth'
    _save_checkpoint(other, classes)
    out = tmp_path / 'out'
    _refused([CONFIG, other, '--data-root', test_root, '--format-only',
              '--out-dir', out, '--test-split'],
             r"trained on classes \['truck', 'car'")
    assert not out.exists()


def test_out_dir_of_another_run_is_left_alone(test_run, test_root, tmp_path):
    out, _ = test_run
    before = {p: (out / p).read_bytes() for p in ('results_nusc.json',
                                                  'run.json')}
    other = tmp_path / 'other.pth'
    _save_checkpoint(other, load_config(str(CONFIG)).class_names,
                     note='another run')  # same weights, another sha256
    _refused([CONFIG, other, '--data-root', test_root, '--format-only',
              '--out-dir', out, '--test-split'], 'holds another run')
    assert {p: (out / p).read_bytes() for p in before} == before
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('mine')
    _refused([CONFIG, other, '--data-root', test_root, '--format-only',
              '--out-dir', foreign, '--test-split'],
             r"holds files of no format-only run \(\['notes.txt'\]")
    assert os.listdir(foreign) == ['notes.txt']


def test_a_failing_submission_is_not_moved_into_place(tmp_path):
    from fuller.evaluation import format_only as fo
    identity = dict(config_sha256='c', checkpoint_sha256='k', ann_file='a',
                    version='v1.0-test', split='test')
    partial = fo.start_partial(str(tmp_path), identity)
    with open(os.path.join(partial, fo.RESULTS_FILE), 'w') as f:
        json.dump(dict(meta=dict(use_camera=True, use_lidar=True,
                                 use_radar=False, use_map=False,
                                 use_external=False),
                       results={'a' * 32: []}), f)
    with pytest.raises(fo.FormatOnlyError, match='missing sample token'):
        fo.finish(str(tmp_path), identity, {'a' * 32, 'b' * 32})
    assert sorted(os.listdir(tmp_path)) == ['.partial']


def test_the_same_run_replaces_its_outputs(tmp_path):
    from fuller.evaluation import format_only as fo
    identity = dict(config_sha256='c', checkpoint_sha256='k', ann_file='a',
                    version='v1.0-test', split='test')
    meta = dict(use_camera=True, use_lidar=True, use_radar=False,
                use_map=False, use_external=False)
    out = tmp_path / 'out'
    for attempt in range(2):
        fo.check_out_dir(str(out), identity)  # empty, then our own run
        partial = fo.start_partial(str(out), identity)
        with open(os.path.join(partial, fo.RESULTS_FILE), 'w') as f:
            json.dump(dict(meta=meta, results={'a' * 32: [], 'b' * 32: []},
                           attempt=attempt), f)
        summary = fo.finish(str(out), identity, {'a' * 32, 'b' * 32})
        assert summary['samples'] == 2 and summary['empty_samples'] == 2
        assert sorted(os.listdir(out)) == ['results_nusc.json', 'run.json']
        written = json.loads((out / 'results_nusc.json').read_text())
        assert written['attempt'] == attempt
        assert json.loads((out / 'run.json').read_text())[
            'checkpoint_sha256'] == 'k'
    with pytest.raises(fo.OutputDirError, match='holds another run'):
        fo.check_out_dir(str(out), dict(identity, split='val'))
