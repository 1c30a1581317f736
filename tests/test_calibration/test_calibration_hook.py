"""GradientCalibrationHook: Mock runner (as mmdet3d's hook tests) and a short
real mmengine Runner whose scalars.json is then plotted."""
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import Mock

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from torch import nn

from mmdet3d.registry import HOOKS

from fuller.calibration import GradientCalibrationHook, GradientCalibrator

REPO = Path(__file__).resolve().parents[2]
TASKS = ('det', 'seg')


class TinyMultiTask(BaseModel):
    """Two modality branches, a shared trunk and two heads on a 4 x 6 BEV."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.camera = nn.Conv2d(2, 3, 1)
        self.lidar = nn.Conv2d(2, 3, 1)
        self.trunk = nn.Conv2d(6, 4, 3, padding=1)
        self.heads = nn.ModuleDict(
            dict(det=nn.Conv2d(4, 1, 1), seg=nn.Conv2d(4, 2, 1)))
        self.grad_calibrator = GradientCalibrator()

    def forward(self, cam, lidar, target, mode='loss'):
        cam_bev, lidar_bev = self.grad_calibrator.calibrate_modalities(
            self.camera(cam), 10 * self.lidar(lidar))
        shared = torch.relu(self.trunk(torch.cat([cam_bev, lidar_bev], 1)))
        feats = self.grad_calibrator.split_shared(shared, TASKS)
        return dict(
            loss_det=((self.heads['det'](feats['det']) - target[:, :1])**2
                      ).mean(),
            loss_seg=(self.heads['seg'](feats['seg']).sigmoid()
                      - target[:, 1:]).abs().mean())


def make_data(seed):
    gen = torch.Generator().manual_seed(seed)
    return dict(cam=torch.randn(2, 2, 4, 6, generator=gen),
                lidar=torch.randn(2, 2, 4, 6, generator=gen),
                target=torch.rand(2, 3, 4, 6, generator=gen))


def train_step(model, seed, loss_scale=1.0):
    model.zero_grad()
    losses = model(**make_data(seed))
    (sum(losses.values()) * loss_scale).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def mock_runner(model, name, loss_scale=None):
    runner = Mock()
    runner.model = model
    runner.hooks = []
    runner.train_dataloader = list(range(100))
    runner.message_hub = MessageHub.get_instance(name)
    scaler = None if loss_scale is None else SimpleNamespace(
        get_scale=lambda: loss_scale, is_enabled=lambda: True)
    runner.optim_wrapper = SimpleNamespace(loss_scaler=scaler)
    return runner


def test_hook_warmup_flags_and_scalars():
    model = TinyMultiTask()
    runner = mock_runner(model, 'test_calib_hook_warmup')
    # registered without importing all of mmdet3d (the Runner test below
    # builds it by name from a config).
    assert HOOKS.module_dict['GradientCalibrationHook'] is \
        GradientCalibrationHook
    hook = GradientCalibrationHook(warmup_iters=2, log_interval=1)
    hook.before_train(runner)
    plain_model = TinyMultiTask()
    plain_model.grad_calibrator.enable_task = False
    plain_model.grad_calibrator.enable_modality = False
    hub = runner.message_hub
    for it in range(4):
        runner.iter = it
        hook.before_train_iter(runner, batch_idx=it)
        calib = model.grad_calibrator
        assert calib.enable_task == calib.enable_modality == (it >= 2)
        grads = train_step(model, it)
        hook.after_train_iter(runner, batch_idx=it)
        plain = train_step(plain_model, it)
        alpha = hub.get_scalar('train/calib/alpha/det').current()
        enabled = hub.get_scalar('train/calib/enabled/task').current()
        ratio_after = hub.get_scalar(
            'train/calib/modality_ratio/after').current()
        trunk_equal = torch.equal(grads['trunk.weight'], plain['trunk.weight'])
        if it < 2:  # warm-up: plain sum, stats still logged
            assert alpha == 1.0 and enabled == 0.0 and trunk_equal
            assert ratio_after == pytest.approx(hub.get_scalar(
                'train/calib/modality_ratio/before').current())
        else:
            assert 0.0 < alpha < 1.0 and enabled == 1.0 and not trunk_equal
            assert ratio_after == pytest.approx(1.0, rel=1e-5)
    for key in ('train/calib/cos/det-seg', 'train/calib/norm/task/det',
                'train/calib/norm/task/seg',
                'train/calib/norm/modality/camera',
                'train/calib/norm/modality/lidar', 'train/calib/excluded/seg',
                'train/calib/modality_ratio/before'):
        assert len(hub.log_scalars[key].data[0]) == 4, key


def test_hook_log_interval_and_level_switches():
    model = TinyMultiTask()
    runner = mock_runner(model, 'test_calib_hook_interval')
    hook = GradientCalibrationHook(enable_modality=False, log_interval=3)
    recorded = []
    for it in range(6):
        runner.iter = it
        hook.before_train_iter(runner, batch_idx=it)
        recorded.append(model.grad_calibrator.record_stats)
        assert model.grad_calibrator.enable_task
        assert not model.grad_calibrator.enable_modality
        train_step(model, it)
        hook.after_train_iter(runner, batch_idx=it)
    assert recorded == [False, False, True, False, False, True]
    hub = runner.message_hub
    assert len(hub.log_scalars['train/calib/alpha/det'].data[0]) == 2
    assert hub.get_scalar('train/calib/scale/camera').current() == 1.0


def test_hook_unscales_amp_norms():
    model = TinyMultiTask()
    runner = mock_runner(model, 'test_calib_hook_amp', loss_scale=1024.0)
    hook = GradientCalibrationHook(log_interval=1)
    runner.iter = 0
    hook.before_train_iter(runner, batch_idx=0)
    train_step(model, 0, loss_scale=1024.0)
    hook.after_train_iter(runner, batch_idx=0)
    scaled = {k: runner.message_hub.get_scalar(f'train/{k}').current()
              for k in ('calib/norm/task/det', 'calib/alpha/det')}
    reference = TinyMultiTask()
    reference.grad_calibrator.record_stats = True
    train_step(reference, 0)
    ref = reference.grad_calibrator.scalar_stats()
    assert scaled['calib/norm/task/det'] == pytest.approx(
        ref['calib/norm/task/det'], rel=1e-5)
    assert scaled['calib/alpha/det'] == pytest.approx(ref['calib/alpha/det'],
                                                      rel=1e-5)
    assert model.grad_calibrator.last_stats['loss_scale'] == 1024.0


def test_hook_unwraps_and_errors():
    model = TinyMultiTask()
    wrapped = nn.DataParallel(model)  # a registered model wrapper
    runner = mock_runner(wrapped, 'test_calib_hook_wrap')
    assert GradientCalibrationHook.get_calibrator(runner) is \
        model.grad_calibrator
    runner.model = nn.Linear(2, 2)
    with pytest.raises(AttributeError, match='grad_calibrator'):
        GradientCalibrationHook().before_train(runner)
    with pytest.raises(ValueError, match='warmup_iters'):
        GradientCalibrationHook(warmup_iters=-1)


def test_runner_logs_calib_scalars_and_plot(tmp_path):
    from mmengine.runner import Runner
    data = [{k: v[0] for k, v in make_data(i).items()} for i in range(4)]
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    runner = Runner(
        model=TinyMultiTask(), work_dir=str(tmp_path),
        train_dataloader=loader,
        train_cfg=dict(by_epoch=False, max_iters=4),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=None),
        custom_hooks=[dict(type='GradientCalibrationHook', warmup_iters=2)],
        default_scope='mmdet3d', experiment_name='test_calib_hook_runner')
    runner.train()
    scalars = sorted(tmp_path.glob('*/vis_data/scalars.json'))
    assert len(scalars) == 1
    lines = scalars[0].read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r['step'] for r in records] == [1, 2, 3, 4]
    assert [r['calib/enabled/task'] for r in records] == [0, 0, 1, 1]
    assert records[0]['calib/alpha/det'] == 1.0
    assert 0.0 < records[3]['calib/alpha/det'] < 1.0
    assert 'calib/cos/det-seg' in records[3]
    assert records[3]['calib/modality_ratio/after'] == pytest.approx(1.0,
                                                                     rel=1e-4)

    spec = importlib.util.spec_from_file_location(
        'plot_calibration',
        REPO / 'tools' / 'analysis' / 'plot_calibration.py')
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    written = plot.plot_calibration(str(tmp_path), str(tmp_path / 'plots'))
    names = {p.name for p in written}
    assert {'calib_alpha.png', 'calib_cos.png', 'calib_norm_task.png',
            'calib_norm_modality.png', 'calib_modality_ratio.png'} <= names
    for path in written:
        assert path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    with pytest.raises(ValueError, match='no calib_missing/'):
        plot.plot_calibration(str(scalars[0]), str(tmp_path / 'p2'),
                              prefix='calib_missing/')
