"""tools/train.py trains the tiny FULLER config on a generated dataset for a
few iterations, resumes, and tools/test.py returns devkit mAP/NDS and map
mIoU for the checkpoint."""
import json
import subprocess
import sys

import pytest
import torch

from fuller.testing import REPO_ROOT, load_script, run_ranks

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
    # The summaries follow from the detailed entries by the published definitions (the
    # detailed entries are rounded to 4 decimals); whether the model learns:
    # tests/test_tools/test_learning_check.py.
    det = {k.split('/')[-1]: v for k, v in metrics.items()
           if k.startswith('NuScenes metric/pred_instances_3d_NuScenes/')}
    aps = [v for k, v in det.items() if '_AP_dist_' in k]
    assert len(aps) == 10 * 4  # classes x distance thresholds 0.5, 1, 2, 4 m
    assert det['mAP'] == pytest.approx(sum(aps) / len(aps), abs=1e-3)
    tp_errors = [det[k] for k in ('mATE', 'mASE', 'mAOE', 'mAVE', 'mAAE')]
    nds = (5 * det['mAP'] + sum(1 - min(1, e) for e in tp_errors)) / 10
    assert det['NDS'] == pytest.approx(nds, abs=1e-3)
    classes = ('drivable_area', 'ped_crossing', 'walkway', 'stop_line', 'carpark_area',
               'divider')
    for summary, per_class in (('mIoU@0.5', 'IoU@0.50'), ('mIoU@max', 'IoU@max')):
        values = [metrics[f'map/{c}/{per_class}'] for c in classes]
        values = [v for v in values if v == v]  # classes absent everywhere are NaN
        assert metrics[f'map/{summary}'] == pytest.approx(sum(values) / len(values))
    assert all(metrics[f'map/{c}/IoU@max'] >= metrics[f'map/{c}/IoU@0.50'] for c in classes
               if metrics[f'map/{c}/IoU@0.50'] == metrics[f'map/{c}/IoU@0.50'])
    # the submission file itself: tests/test_tools/test_format_only.py


def _launched_rank(rank, argv, out_dir):
    """One rank of a two-process launch (``run_ranks`` has set the
    launcher's environment: MASTER_ADDR, a free MASTER_PORT, RANK,
    WORLD_SIZE, LOCAL_RANK): tools/train.py's ``main`` with
    ``--launcher pytorch``; this rank's trained parameters are saved when
    ``Runner.train`` returns."""
    from mmengine.runner import Runner
    torch.set_num_threads(1)
    train = Runner.train

    def train_and_save(runner):
        model = train(runner)
        module = getattr(runner.model, 'module', runner.model)
        torch.save({n: p.detach().clone() for n, p in module.named_parameters()},
                   f'{out_dir}/rank{rank}.pth')
        return model

    Runner.train = train_and_save
    load_script(REPO_ROOT / 'tools' / 'train.py', 'fuller_tools_train').main(argv)


def test_dist_train_two_cpu_processes(synthetic_dataroot, tmp_path):
    """tools/train.py --launcher pytorch on two CPU processes (what
    tools/dist_train.sh CONFIG 2 starts through torchrun): gloo, DDP with
    device_ids=None, mmengine's DistributedSampler sharding, FULLER's
    in-backward all-reduce; on a free port with deadlines (run_ranks)."""
    work = tmp_path / 'ddp'
    argv = [str(CONFIG), '--launcher', 'pytorch', '--work-dir', str(work),
            '--data-root', str(synthetic_dataroot), '--cfg-options',
            'train_cfg.max_epochs=1', 'train_cfg.val_interval=10',
            'default_hooks.logger.interval=1', 'custom_hooks.2.warmup_iters=0']
    run_ranks(_launched_rank, args=(argv, str(tmp_path)), world_size=2,
              backend=None, timeout_s=900)
    import fuller  # noqa: F401  (weights_only allow-list)
    ckpt = torch.load(work / 'epoch_1.pth', weights_only=True)
    assert ckpt['meta']['fuller']['effective_batch_size'] == 4  # 2 ranks x 2
    # 4 training samples, 2 per rank and step: one step, every sample once
    assert ckpt['meta']['iter'] == 1
    scalars = next(work.glob('*/vis_data/scalars.json'))
    assert 'calib/alpha/det' in scalars.read_text()
    ranks = [torch.load(tmp_path / f'rank{r}.pth', weights_only=True)
             for r in range(2)]
    saved = torch.load(work / 'epoch_1.pth', weights_only=True)['state_dict']
    assert ranks[0].keys() == ranks[1].keys()
    for name, value in ranks[0].items():  # DDP: every rank applies the same step
        assert torch.equal(value, ranks[1][name]), name
        assert torch.equal(value, saved[name]), name  # the checkpoint holds them
