"""tools/train.py trains the tiny FULLER config on a generated dataset for a
few iterations, resumes, and tools/test.py returns devkit mAP/NDS and map
mIoU for the checkpoint."""
import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT

CONFIG = REPO_ROOT / 'configs' / 'fuller' / 'fuller_tiny_1xb2-24e_synthetic-nus.py'


def run_tool(*args, timeout=900):
    proc = subprocess.run([sys.executable, *map(str, args)],
                          capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def trained(synthetic_dataroot, tmp_path_factory):
    work = tmp_path_factory.mktemp('work')
    out = run_tool(REPO_ROOT / 'tools' / 'train.py', CONFIG, '--work-dir',
                   work, '--data-root', synthetic_dataroot, '--cfg-options',
                   'train_cfg.max_epochs=1', 'train_cfg.val_interval=10',
                   'default_hooks.logger.interval=1',
                   'custom_hooks.2.warmup_iters=0')
    return work, out


def test_train_logs_per_task_losses_and_calibration(trained):
    work, out = trained
    assert (work / 'epoch_1.pth').is_file()
    for key in ('det/loss_heatmap', 'seg/loss_divider', 'loss:'):
        assert key in out, key
    scalars = next(work.glob('*/vis_data/scalars.json'))
    logged = [json.loads(line) for line in scalars.read_text().splitlines()]
    calib = [rec for rec in logged if 'calib/alpha/det' in rec]
    assert calib, 'GradientCalibrationHook logged nothing'
    rec = calib[-1]
    assert rec['calib/alpha/det'] + rec['calib/alpha/seg'] == \
        pytest.approx(1.0, abs=1e-4)
    assert 'calib/cos/det-seg' in rec


def test_checkpoint_has_run_meta_and_resumes(trained, synthetic_dataroot):
    import fuller  # noqa: F401  (weights_only allow-list)
    work, _ = trained
    ckpt = torch.load(work / 'epoch_1.pth', weights_only=True)
    assert ckpt['meta']['fuller']['effective_batch_size'] == 2
    out = run_tool(REPO_ROOT / 'tools' / 'train.py', CONFIG, '--work-dir',
                   work, '--data-root', synthetic_dataroot, '--resume',
                   '--cfg-options', 'train_cfg.max_epochs=2',
                   'train_cfg.val_interval=10')
    assert 'resumed epoch: 1' in out.replace(',', '')
    assert (work / 'epoch_2.pth').is_file()


def test_test_tool_reports_devkit_and_map_metrics(trained, synthetic_dataroot):
    work, _ = trained
    out_json = work / 'metrics.json'
    run_tool(REPO_ROOT / 'tools' / 'test.py', CONFIG, work / 'epoch_1.pth',
             '--work-dir', work, '--data-root', synthetic_dataroot,
             '--out-metrics', out_json)
    metrics = json.loads(out_json.read_text())
    nds = metrics['NuScenes metric/pred_instances_3d_NuScenes/NDS']
    mean_ap = metrics['NuScenes metric/pred_instances_3d_NuScenes/mAP']
    assert 0 <= mean_ap <= 1 and 0 <= nds <= 1
    assert 0 <= metrics['map/mIoU@0.5'] <= metrics['map/mIoU@max'] <= 1
    # the submission file itself: tests/test_tools/test_format_only.py


def test_dist_train_two_cpu_processes(synthetic_dataroot, tmp_path):
    """tools/dist_train.sh CONFIG 2 on a machine without CUDA: torchrun,
    gloo, DDP with device_ids=None, FULLER's in-backward all-reduce."""
    import os
    env = dict(os.environ, PORT='29617', PYTHONWARNINGS='ignore',
               PATH=f'{os.path.dirname(sys.executable)}:{os.environ["PATH"]}')
    work = tmp_path / 'ddp'
    proc = subprocess.run(
        ['bash', str(REPO_ROOT / 'tools' / 'dist_train.sh'), str(CONFIG), '2',
         '--work-dir', str(work), '--data-root', str(synthetic_dataroot),
         '--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=10',
         'default_hooks.logger.interval=1', 'custom_hooks.2.warmup_iters=0'],
        capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'Distributed training: True' in out
    assert (work / 'epoch_1.pth').is_file()
    scalars = next(work.glob('*/vis_data/scalars.json'))
    assert 'calib/alpha/det' in scalars.read_text()
