"""tools/analysis/demo_report.py on hand-made metrics, logs and pictures."""
import json
import re

import cv2
import numpy as np
import pytest

from fuller.visualization.training_curves import (load_scalars,
                                                  task_loss_series)
from fuller.testing import load_script

DET = 'NuScenes metric/pred_instances_3d_NuScenes/'
TOKENS = ('a' * 32, 'b' * 32)


def _report_module(repo_root):
    return load_script(repo_root / 'tools' / 'analysis' / 'demo_report.py', 'demo_report')


def _png(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 12, 3), colour, np.uint8))


def _log(work_dir, scale):
    """An mmengine scalars.json: train records every 4 iterations and one
    validation record without losses."""
    log = work_dir / '20260101_000000' / 'vis_data' / 'scalars.json'
    log.parent.mkdir(parents=True)
    lines = []
    for step in (4, 8, 12):
        det = (1.0 / step, 0.5 / step)
        seg = tuple(scale * v / step for v in (0.2, 0.3))
        lines.append(json.dumps({
            'lr': 1e-3, 'det/loss_heatmap': det[0], 'det/loss_bbox': det[1],
            'det/matched_ious': 0.7, 'seg/loss_drivable_area': seg[0],
            'seg/loss_divider': seg[1], 'loss': sum(det) + sum(seg),
            'calib/alpha/det': 0.5, 'epoch': 1, 'iter': step, 'step': step}))
    lines.append(json.dumps({'map/mIoU@0.5': 0.3, 'step': 1}))
    log.write_text('\n'.join(lines) + '\n')
    return log


@pytest.fixture
def demo_dir(tmp_path):
    runs = {'FULLER': (0.1234, 0.2345, 0.4567, 1.0),
            'plain sum': (0.0987, 0.1876, 0.3456, 2.0)}
    for i, (name, (m_ap, nds, miou, scale)) in enumerate(runs.items()):
        wd = tmp_path / ('fuller' if i == 0 else 'baseline')
        wd.mkdir()
        (wd / 'metrics.json').write_text(json.dumps({
            DET + 'mAP': m_ap, DET + 'NDS': nds, 'map/mIoU@0.5': miou,
            'map/drivable_area/IoU@0.50': 0.8}))
        _log(wd, scale)
        _png(wd / 'pictures' / f'{TOKENS[0]}.png', 40 * (i + 1))
        if i == 0:  # the baseline lacks the second picture
            _png(wd / 'pictures' / f'{TOKENS[1]}.png', 200)
    _png(tmp_path / 'fuller' / 'calibration_plots' / 'calib_alpha.png', 90)
    (tmp_path / 'timings.tsv').write_text('data\t12.5\ntrain FULLER\t250\n'
                                          'test FULLER\t37.5\n')
    return tmp_path


def test_task_loss_series_sums_each_task(demo_dir):
    series = task_loss_series(load_scalars(str(demo_dir / 'fuller')))
    assert list(series) == ['det', 'seg', 'total']   # no calib/, no matched_ious
    steps, det = series['det']
    assert steps == [4.0, 8.0, 12.0]
    assert np.allclose(det, [1.5 / 4, 1.5 / 8, 1.5 / 12])
    assert np.allclose(series['seg'][1], [0.5 / 4, 0.5 / 8, 0.5 / 12])
    assert np.allclose(series['total'][1], [2.0 / 4, 2.0 / 8, 2.0 / 12])


def test_report_page(demo_dir, repo_root):
    mod = _report_module(repo_root)
    out = demo_dir / 'report' / 'report.md'
    mod.main(['--run', 'FULLER', str(demo_dir / 'fuller' / 'metrics.json'),
              '--run', 'plain sum', str(demo_dir / 'baseline' / 'metrics.json'),
              '--calibration-dir', str(demo_dir / 'fuller' / 'calibration_plots'),
              '--timings', str(demo_dir / 'timings.tsv'),
              '--notes', 'hand-made runs', '--out', str(out)])
    text = out.read_text()
    # the table: one row per metric present, runs in the given order
    assert '| metric | FULLER | plain sum |' in text
    assert '| mAP | 0.1234 | 0.0987 |' in text
    assert '| NDS | 0.2345 | 0.1876 |' in text
    assert '| map mIoU@0.5 (fixed threshold) | 0.4567 | 0.3456 |' in text
    assert '| IoU@0.5 drivable_area | 0.8000 | 0.8000 |' in text
    assert 'mATE' not in text                       # absent from both runs
    # sections in reading order
    heads = [line for line in text.splitlines() if line.startswith('## ')]
    assert heads == ['## Metrics', '## Training loss per task',
                     '## Gradient calibration (FULLER)',
                     '## Predictions on validation samples',
                     '## Demo stage timings']
    # every image link resolves relative to the report and is a real PNG
    links = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', text)
    assert len(links) == 1 + 1 + 3      # curves, calibration, 3 pictures
    for link in links:
        assert not link.startswith('/')
        assert cv2.imread(str(out.parent / link)) is not None, link
    assert 'loss_curves.png' in links[0]
    # the pictures: same token side by side, a gap where a run has none
    row0 = next(line for line in text.splitlines()
                if line.startswith(f'| `{TOKENS[0][:8]}`'))
    assert 'fuller/pictures' in row0 and 'baseline/pictures' in row0
    row1 = next(line for line in text.splitlines()
                if line.startswith(f'| `{TOKENS[1][:8]}`'))
    assert row1.endswith('| (no picture) |')
    # timings: values, shares and the total (12.5 + 250 + 37.5 = 300)
    assert '| train FULLER | 250 | 83% |' in text
    assert '| total | 300 | |' in text


def test_timings_of_concurrent_stages(tmp_path, repo_root):
    """A block's row is its wall time; its stages are listed under it and
    left out of the total and the shares."""
    mod = _report_module(repo_root)
    path = tmp_path / 'timings.tsv'
    path.write_text('setup\t40\n'
                    'environment report\t12\tsetup\n'
                    'data\t37\tsetup\n'
                    'runs\t500\n'
                    'train A\t420\truns\ntrain B\t440\truns\n'
                    'report\t60\n')
    assert mod.load_timings(str(path))[1] == ('environment report', 12.0,
                                              'setup')
    lines = mod.timings_section(str(path))
    assert '| setup | 40 | 7% |' in lines       # 40 / (40 + 500 + 60)
    assert '| runs | 500 | 83% |' in lines
    assert '| &emsp;train B | 440 | |' in lines
    assert '| total | 600 | |' in lines


def test_report_errors_name_the_file(tmp_path, repo_root):
    mod = _report_module(repo_root)
    missing = tmp_path / 'nope' / 'metrics.json'
    with pytest.raises(FileNotFoundError, match=str(missing)):
        mod.main(['--run', 'x', str(missing), '--out', str(tmp_path / 'r.md')])
    bad = tmp_path / 'timings.tsv'
    bad.write_text('train fast\n')
    with pytest.raises(ValueError, match='timings.tsv:1'):
        mod.load_timings(str(bad))
    bad.write_text('data\t1.5\ntrain\t2\tblock\textra\n')
    with pytest.raises(ValueError, match='timings.tsv:2'):
        mod.load_timings(str(bad))
