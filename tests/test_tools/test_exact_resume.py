"""tools/train.py end to end on the tiny FULLER config and a generated dataroot (4 training
keyframes, batch 1: 4 iterations per epoch, 2 epochs, iteration checkpoints every 3):

* two uninterrupted runs with the same seed end with identical weights, optimiser state, logged
  losses and validation metrics;
* a run killed with SIGKILL while it writes ``iter_6.pth`` (after ``iter_3.pth``, mid-epoch 1,
  with ``max_keep_ckpts=1``) leaves ``iter_3.pth`` whole and ``last_checkpoint`` pointing at it;
  ``--resume`` continues inside epoch 1 and ends with the uninterrupted run's weights,
  optimiser and scheduler state, logged losses and metrics, bit for bit.

The expected values are the uninterrupted run's; exactness needs equal thread counts (1 here).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fuller.utils.config_utils import load_config

from fuller.testing import REPO_ROOT

CONFIG = REPO_ROOT / 'configs' / 'fuller' / 'fuller_tiny_1xb2-24e_synthetic-nus.py'
ITERS = 8  # 2 epochs x 4 keyframes at batch 1
OPTIONS = [
    'train_dataloader.batch_size=1', 'train_cfg.max_epochs=2', 'train_cfg.val_interval=2',
    'default_hooks.logger.interval=1', 'default_hooks.checkpoint.by_epoch=False',
    'default_hooks.checkpoint.interval=3', 'default_hooks.checkpoint.max_keep_ckpts=1',
    'custom_hooks.2.warmup_iters=2', 'randomness.seed=7', 'randomness.deterministic=True',
]
# values that legitimately differ between runs
UNTIMED = ('time', 'data_time', 'memory', 'eta')


def _env():
    return dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONWARNINGS='ignore',
                PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), str(REPO_ROOT)]))


def _train(config, work, dataroot, *extra):
    cmd = [sys.executable, str(REPO_ROOT / 'tools' / 'train.py'), str(config), '--work-dir',
           str(work), '--data-root', str(dataroot), *extra, '--cfg-options', *OPTIONS]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(proc, expect_ok=True):
    try:
        out, _ = proc.communicate(timeout=1800)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    if expect_ok:
        assert proc.returncode == 0, out[-4000:]
    return out


def _logs(work):
    """Per-run lists of scalars.json records, oldest run first."""
    runs = sorted(work.glob('*/vis_data/scalars.json'), key=lambda p: p.parent.parent.name)
    return [[json.loads(line) for line in p.read_text().splitlines()] for p in runs]


def _train_records(records):
    return {r['iter']: {k: v for k, v in r.items() if k not in UNTIMED}
            for r in records if 'loss' in r}


def _metrics(records):
    val = [r for r in records if any('mAP' in k for k in r)]
    assert val, 'no validation record'
    return {k: v for k, v in val[-1].items() if k not in UNTIMED}


def _load(path):
    import fuller  # noqa: F401  (registers the checkpoint allow-list)
    from fuller.compat import register_checkpoint_safe_globals
    register_checkpoint_safe_globals()
    return torch.load(path, map_location='cpu', weights_only=True)


def _assert_same_tree(a, b, where='checkpoint'):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), f'{where}: keys {set(a) ^ set(b)}'
        for key in a:
            _assert_same_tree(a[key], b[key], f'{where}.{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tree(x, y, f'{where}[{i}]')
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'


@pytest.fixture(scope='module')
def runs(synthetic_dataroot, tmp_path_factory):
    base = tmp_path_factory.mktemp('resume')
    killed_cfg = load_config(str(CONFIG))
    killed_cfg.custom_imports.imports.append('sigkill_hook')
    killed_cfg.custom_hooks.append(dict(type='SigkillDuringSaveHook', name='iter_6.'))
    killed_cfg.dump(str(base / 'killed.py'))
    procs = dict(first=_train(CONFIG, base / 'first', synthetic_dataroot),
                 again=_train(CONFIG, base / 'again', synthetic_dataroot),
                 resumed=_train(base / 'killed.py', base / 'resumed', synthetic_dataroot))
    try:
        _finish(procs['first'])
        _finish(procs['again'])
        killed_out = _finish(procs['resumed'], expect_ok=False)
    finally:
        for proc in procs.values():  # none left behind when one fails
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert procs['resumed'].returncode == -9, killed_out[-4000:]  # died by SIGKILL
    work = base / 'resumed'
    after_kill = dict(files=sorted(p.name for p in work.iterdir() if p.is_file()),
                      last=(work / 'last_checkpoint').read_text(),
                      iter_3=_load(work / 'iter_3.pth'))
    resume_out = _finish(_train(CONFIG, work, synthetic_dataroot, '--resume'))
    return dict(base=base, after_kill=after_kill, resume_out=resume_out)


def test_death_while_saving_keeps_last_good_checkpoint(runs):
    after = runs['after_kill']
    # the checkpoint being written is only a temp file; iter_3 (max_keep_ckpts=1) survives
    assert 'iter_6.pth' not in after['files'] and '.iter_6.pth.tmp' in after['files']
    assert 'iter_3.pth' in after['files']
    assert Path(after['last']).name == 'iter_3.pth'
    assert after['iter_3']['meta']['iter'] == 3 and after['iter_3']['meta']['epoch'] == 0
    out = runs['resume_out'].replace(',', '')
    assert 'resumed epoch: 0 iter: 3' in out
    assert 'skipping its first 3 of 4 batches' in out
    work = runs['base'] / 'resumed'
    assert not (work / '.iter_6.pth.tmp').exists()  # the stale temp file was removed


def test_same_seed_same_weights_losses_and_metrics(runs):
    first, again = runs['base'] / 'first', runs['base'] / 'again'
    _assert_same_tree(_load(first / f'iter_{ITERS}.pth')['state_dict'],
                      _load(again / f'iter_{ITERS}.pth')['state_dict'], 'state_dict')
    (log_a, ), (log_b, ) = _logs(first), _logs(again)
    losses = _train_records(log_a)
    assert sorted(losses) == list(range(1, ITERS + 1))
    assert losses == _train_records(log_b)
    metrics = _metrics(log_a)
    assert metrics == _metrics(log_b)
    # metrics are real numbers in range, not a constant placeholder
    assert all(0 <= v <= 1 for k, v in metrics.items() if k.endswith(('mAP', 'NDS')))


def test_resume_after_sigkill_is_exact(runs):
    first, resumed = runs['base'] / 'first', runs['base'] / 'resumed'
    want, got = _load(first / f'iter_{ITERS}.pth'), _load(resumed / f'iter_{ITERS}.pth')
    for key in ('state_dict', 'optimizer', 'param_schedulers'):
        _assert_same_tree(want[key], got[key], key)
    # an iteration checkpoint counts the epochs finished before its iteration's epoch ended
    assert got['meta']['iter'] == ITERS and got['meta']['epoch'] == 1
    want_log = _logs(first)[0]
    before_kill, after_resume = _logs(resumed)
    expected = _train_records(want_log)
    killed, continued = _train_records(before_kill), _train_records(after_resume)
    assert sorted(continued) == list(range(4, ITERS + 1))  # nothing trained twice
    assert set(killed) >= {1, 2, 3}
    for it, record in {**killed, **continued}.items():
        assert record == expected[it], f'iteration {it}'
    assert _metrics(after_resume) == _metrics(want_log)
