"""tools/ablation.py end to end on a 2-iteration budget: 2 variants x 2 seeds
through the real train/test tools, the table, JSON and chart, and resuming
after one run's metrics are deleted."""
import json
import os
import sys

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / 'tools'))
import ablation  # noqa: E402


@pytest.mark.slow
def test_runner_two_variants_two_seeds_and_resume(synthetic_dataroot,
                                                  tmp_path, capsys):
    work = tmp_path / 'study'
    argv = ['--study', 'tiny', '--variants', 'naive', 'fuller', '--seeds', '0', '1',
            '--work-dir', str(work), '--data-root', str(synthetic_dataroot),
            '--epochs', '1', '--cfg-options', 'train_dataloader.batch_size=2']
    report = ablation.main(argv)
    result = json.loads((work / 'results.json').read_text())
    assert set(result['runs']) == {'naive', 'fuller'}
    for variant in ('naive', 'fuller'):
        assert sorted(result['runs'][variant]) == ['0', '1']
        meta = result['run_meta'][variant]['0']
        assert meta['seed'] == 0 and meta['commit']
    summary = result['summary']['fuller']['mIoU@0.5']
    runs = result['runs']
    key = 'map/mIoU@0.5'
    diffs = [runs['fuller'][s][key] - runs['naive'][s][key] for s in '01']
    assert summary['paired']['diffs'] == pytest.approx(diffs)
    text = open(report).read()
    assert '| fuller | 2 |' in text and '| naive | 2 |' in text
    png = (work / 'results.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'

    # two seeds gave two trainings per variant
    mtimes = {p: os.path.getmtime(p) for p in work.glob('*/seed*/metrics.json')}
    assert len(mtimes) == 4
    removed = work / 'fuller' / 'seed1' / 'metrics.json'
    removed.unlink()
    capsys.readouterr()
    ablation.main(argv)
    out = capsys.readouterr().out
    assert out.count('testing') == 1  # only the deleted run is redone
    assert 'fuller seed 1: training' in out
    assert removed.is_file()
    for path, mtime in mtimes.items():
        if path != removed:
            assert os.path.getmtime(path) == mtime
