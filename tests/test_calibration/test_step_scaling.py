"""Step form of the modality calibration (``modality_mode='step'``).

* BranchStepScaler on AdamW with known gradients and a known optimiser state
  gives the steps of an AdamW update written here in numpy, times the factors;
* on a toy fusion model the branch steps are s_m times the steps of the same
  run with the modality level off, where s_m = mean(n) / n_m comes from the
  BEV-feature gradients read off autograd in this file; under plain SGD the
  step form equals the gradient form;
* GradientCalibrationHook attaches it from a config, logs its factors and
  fails clearly when it cannot.
"""
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from torch import nn

from fuller.calibration import (BranchStepScaler, GradientCalibrationHook,
                                GradientCalibrator, group_parameters)

TASKS = ('det', 'seg')
LR, WD, BETAS, EPS = 0.05, 0.1, (0.9, 0.99), 1e-8


class StubCalibrator:
    """What BranchStepScaler reads from a calibrator, with fixed factors."""

    def __init__(self, scales, record=True):
        self.scales, self.record_stats = scales, record
        self.step_scaler_attached = False
        self.steps = None

    def pop_step_scales(self):
        scales, self.scales = self.scales, None
        return scales

    def record_steps(self, norms, rel, scales):
        self.steps = dict(norm=norms, rel=rel, scale=scales)


def adamw_numpy(p, g, m, v, t):
    """torch.optim.AdamW's update (decoupled decay, bias-corrected), numpy."""
    p = p * (1 - LR * WD)
    m = BETAS[0] * m + (1 - BETAS[0]) * g
    v = BETAS[1] * v + (1 - BETAS[1]) * g * g
    m_hat = m / (1 - BETAS[0] ** t)
    denom = np.sqrt(v) / np.sqrt(1 - BETAS[1] ** t) + EPS
    return p - LR * m_hat / denom, m


def test_adamw_step_scale_matches_numpy():
    rng = np.random.default_rng(0)
    names = ('camera', 'lidar', 'trunk')
    shapes = dict(camera=[(3, 2), (3, )], lidar=[(4, )], trunk=[(2, 2)])
    params = {n: [nn.Parameter(torch.tensor(rng.normal(size=s)))
                  for s in shapes[n]] for n in names}
    flat = [p for n in names for p in params[n]]
    opt = torch.optim.AdamW(flat, lr=LR, betas=BETAS, eps=EPS,
                            weight_decay=WD)
    ref = {}
    for p in flat:  # a known state: 3 earlier steps
        m, v = rng.normal(size=p.shape), rng.uniform(0.1, 1, size=p.shape)
        opt.state[p] = dict(step=torch.tensor(3.0),
                            exp_avg=torch.tensor(m),
                            exp_avg_sq=torch.tensor(v))
        p.grad = torch.tensor(rng.normal(size=p.shape))
        ref[p] = adamw_numpy(p.detach().numpy().copy(), p.grad.numpy(), m,
                             v, t=4)
    before = {p: p.detach().numpy().copy() for p in flat}
    scales = dict(camera=2.5, lidar=0.4)  # no factor for the trunk
    stub = StubCalibrator(dict(scales))
    scaler = BranchStepScaler(stub, params).attach(opt)
    assert stub.step_scaler_attached
    opt.step()
    for n in names:
        s = scales.get(n, 1.0)
        sq = 0.0
        for p in params[n]:
            p_opt, m_new = ref[p]
            want = before[p] + s * (p_opt - before[p])
            np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-12,
                                       atol=1e-14)
            # the optimiser state is AdamW's own, not scaled
            np.testing.assert_allclose(opt.state[p]['exp_avg'].numpy(),
                                       m_new, rtol=1e-12)
            sq += float(((want - before[p])**2).sum())
        assert stub.steps['norm'][n] == pytest.approx(sq ** 0.5, rel=1e-10)
        w = sum(float((before[p]**2).sum()) for p in params[n]) ** 0.5
        assert stub.steps['rel'][n] == pytest.approx(sq ** 0.5 / w, rel=1e-10)
    assert stub.steps['scale'] == dict(camera=2.5, lidar=0.4, trunk=1.0)
    # consumed: the next step (no new backward) is AdamW's own
    p = params['camera'][0]
    start = p.detach().clone()
    stub.record_stats = False
    opt.step()
    assert stub.steps['scale']['camera'] == 2.5  # not re-recorded
    state = opt.state[p]
    assert state['step'] == 5
    assert not torch.equal(p.detach(), start)
    scaler.detach()
    assert not stub.step_scaler_attached and not opt._optimizer_step_pre_hooks


class ToyFusion(nn.Module):
    """camera/LiDAR branches -> fuser -> two heads; the fuser reads LiDAR
    30x louder, so its BEV gradient is ~30x the camera's."""

    def __init__(self, modality_mode='grad'):
        super().__init__()
        torch.manual_seed(0)
        self.camera = nn.Conv2d(3, 4, 3, padding=1)
        self.lidar = nn.Conv2d(2, 4, 3, padding=1)
        self.fuser = nn.Conv2d(8, 6, 3, padding=1)
        self.heads = nn.ModuleDict(
            dict(det=nn.Conv2d(6, 2, 1), seg=nn.Conv2d(6, 3, 1)))
        self.grad_calibrator = GradientCalibrator(modality_mode=modality_mode)
        self.taps = {}

    def forward(self, data):
        cal = self.grad_calibrator
        cam, lidar = cal.calibrate_modalities(self.camera(data['cam']),
                                              self.lidar(data['lidar']))
        for name, feat in (('cam', cam), ('lidar', lidar)):
            feat.retain_grad()
            self.taps[name] = feat
        shared = torch.tanh(self.fuser(torch.cat([cam, 30 * lidar], 1)))
        feats = cal.split_shared(shared, TASKS)
        det = self.heads['det'](feats['det'])
        seg = self.heads['seg'](feats['seg'])
        return ((det - data['det'])**2).mean() + \
            nn.functional.binary_cross_entropy_with_logits(seg, data['seg'])


def toy_data(seed=0):
    gen = torch.Generator().manual_seed(seed)  # (B, C, Y, X), Y != X
    return dict(cam=torch.randn(2, 3, 6, 10, generator=gen).double(),
                lidar=torch.randn(2, 2, 6, 10, generator=gen).double(),
                det=torch.randn(2, 2, 6, 10, generator=gen).double(),
                seg=(torch.rand(2, 3, 6, 10, generator=gen) > 0.5).double())


def run_steps(model, make_opt, scaler, steps=3):
    model.double()
    opt = make_opt(model.parameters())
    if scaler:
        BranchStepScaler(model.grad_calibrator, dict(
            camera=list(model.camera.parameters()),
            lidar=list(model.lidar.parameters()))).attach(opt)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    deltas, norms = [], []
    for it in range(steps):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.zero_grad()
        model(toy_data(it)).backward()
        norms.append({k: float(t.grad.norm()) for k, t in model.taps.items()})
        opt.step()
        deltas.append({n: p.detach() - before[n]
                       for n, p in model.named_parameters()})
    return start, deltas, norms


def adamw(params):
    return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.01)


def test_step_form_scales_adamw_branch_steps_by_measured_factors():
    plain = ToyFusion()
    plain.grad_calibrator.enable_modality = False
    _, plain_deltas, plain_norms = run_steps(plain, adamw, scaler=False,
                                             steps=1)
    stepped = ToyFusion('step')
    _, step_deltas, step_norms = run_steps(stepped, adamw, scaler=True,
                                           steps=1)
    # the gradients the step form leaves at the fuser inputs are the plain ones
    assert step_norms[0] == pytest.approx(plain_norms[0], rel=1e-12)
    n = plain_norms[0]
    target = (n['cam'] + n['lidar']) / 2
    factor = dict(camera=target / n['cam'], lidar=target / n['lidar'])
    assert factor['camera'] > 5  # the toy is imbalanced: the factors matter
    for name, delta in step_deltas[0].items():
        branch = name.split('.')[0]
        want = plain_deltas[0][name] * factor.get(branch, 1.0)
        # the calibrator's norms are float32 sums: s_m to ~1e-7
        torch.testing.assert_close(delta, want, rtol=1e-6, atol=1e-12)


def test_step_form_equals_gradient_form_under_plain_sgd():
    def sgd(params):
        return torch.optim.SGD(params, lr=0.05)

    grad_model = ToyFusion('grad')
    start_g, deltas_g, _ = run_steps(grad_model, sgd, scaler=False)
    step_model = ToyFusion('step')
    start_s, deltas_s, _ = run_steps(step_model, sgd, scaler=True)
    for name in start_g:
        torch.testing.assert_close(start_s[name], start_g[name])
        for it in range(3):
            torch.testing.assert_close(deltas_s[it][name], deltas_g[it][name],
                                       rtol=1e-9, atol=1e-12)
    # and under AdamW the two forms differ (the gradient form is normalised)
    _, adam_g, _ = run_steps(ToyFusion('grad'), adamw, scaler=False, steps=1)
    _, adam_s, _ = run_steps(ToyFusion('step'), adamw, scaler=True, steps=1)
    ratio = adam_s[0]['camera.weight'].norm() / adam_g[0][
        'camera.weight'].norm()
    assert ratio > 5


def test_calibrator_step_mode_edge_cases():
    with pytest.raises(ValueError, match='modality_mode'):
        GradientCalibrator(modality_mode='steps')
    cal = GradientCalibrator(modality_mode='step')
    cam = torch.ones(3, requires_grad=True)
    lidar = torch.ones(3, requires_grad=True)
    c, l_ = cal.calibrate_modalities(cam, lidar)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        (c.sum() * float('nan') + 4 * l_.sum()).backward()
    assert any('no BranchStepScaler' in str(w.message) for w in caught)
    assert torch.equal(cam.grad, torch.zeros(3))  # non-finite: dropped
    assert torch.equal(lidar.grad, torch.full((3, ), 4.0))  # not rescaled
    assert cal.pop_step_scales() == dict(camera=1.0, lidar=1.0)
    assert cal.pop_step_scales() is None
    # disabled level: no factor is left for the optimiser step
    cal.enable_modality = False
    cal.pending_step_scales = dict(camera=3.0, lidar=1.0)  # stale
    cal.calibrate_modalities(cam, lidar)
    assert cal.pop_step_scales() is None


class HookModel(BaseModel):

    def __init__(self, mode):
        super().__init__()
        self.net = ToyFusion(mode)
        self.grad_calibrator = self.net.grad_calibrator

    def forward(self, cam, lidar, det, seg, mode='loss'):
        return dict(loss=self.net(dict(cam=cam, lidar=lidar, det=det,
                                       seg=seg)))


PREFIXES = dict(camera=('net.camera.', ), lidar=('net.lidar.', ),
                trunk=('net.fuser.', ))


def test_hook_attaches_step_scaler_and_logs_steps():
    model = HookModel('step').double()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    runner = SimpleNamespace(
        model=model, hooks=[], iter=0, train_dataloader=list(range(10)),
        message_hub=MessageHub.get_instance('test_step_scaling_hook'),
        optim_wrapper=SimpleNamespace(optimizer=opt, loss_scaler=None))
    hook = GradientCalibrationHook(log_interval=1, param_prefixes=PREFIXES)
    hook.before_train(runner)
    hook.before_train_iter(runner, batch_idx=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.zero_grad()
    model(**toy_data(0))['loss'].backward()
    opt.step()
    hook.after_train_iter(runner, batch_idx=0)
    hub = runner.message_hub
    norms = model.net.taps
    n_cam, n_lidar = (float(norms[k].grad.norm()) for k in ('cam', 'lidar'))
    target = (n_cam + n_lidar) / 2
    assert hub.get_scalar('train/calib/step_scale/camera').current() == \
        pytest.approx(target / n_cam, rel=1e-6)
    assert hub.get_scalar('train/calib/scale/camera').current() == 1.0
    for group, prefixes in PREFIXES.items():
        sq = sum(float((p.detach() - before[n]).pow(2).sum())
                 for n, p in model.named_parameters()
                 if n.startswith(prefixes))
        logged = hub.get_scalar(f'train/calib/norm/step/{group}').current()
        assert logged == pytest.approx(sq ** 0.5, rel=1e-9)
    hook.after_train(runner)
    assert not opt._optimizer_step_post_hooks


def test_hook_step_mode_errors():
    model = HookModel('step')
    runner = SimpleNamespace(model=model, hooks=[],
                             optim_wrapper=SimpleNamespace(loss_scaler=None))
    with pytest.raises(TypeError, match="modality_mode='step'"):
        GradientCalibrationHook(param_prefixes=PREFIXES).before_train(runner)
    runner.optim_wrapper.optimizer = torch.optim.SGD(model.parameters(), 0.1)
    with pytest.raises(ValueError, match=r"\['camera', 'lidar'\]"):
        GradientCalibrationHook().before_train(runner)  # BEVFusion names
    with pytest.raises(ValueError, match='disjoint'):
        group_parameters(model, dict(camera=('net.',), lidar=('net.lidar',)))
    # gradient mode, no optimiser: nothing to attach, no error
    runner = SimpleNamespace(model=HookModel('grad'), hooks=[],
                             optim_wrapper=SimpleNamespace(loss_scaler=None))
    GradientCalibrationHook(param_prefixes=PREFIXES).before_train(runner)


def test_runner_with_step_mode_logs_factors(tmp_path):
    """Through mmengine's Runner and OptimWrapper (AdamW, clipping)."""
    import json

    from mmengine.runner import Runner
    data = [{k: v[0].float() for k, v in toy_data(i).items()}
            for i in range(4)]
    runner = Runner(
        model=HookModel('step'), work_dir=str(tmp_path),
        train_dataloader=torch.utils.data.DataLoader(data, batch_size=2),
        train_cfg=dict(by_epoch=False, max_iters=4),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-2),
                           clip_grad=dict(max_norm=35)),
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=None),
        custom_hooks=[dict(type='GradientCalibrationHook', warmup_iters=2,
                           param_prefixes=PREFIXES)],
        default_scope='mmdet3d', experiment_name='test_step_mode_runner')
    runner.train()
    (path, ) = tmp_path.glob('*/vis_data/scalars.json')
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert ['calib/step_scale/camera' in r for r in records] == \
        [False, False, True, True]  # warm-up: no factors
    assert records[3]['calib/step_scale/camera'] > 5  # LiDAR is 30x louder
    assert records[3]['calib/scale/camera'] == 1.0
    assert all(r['calib/norm/step/trunk'] > 0 for r in records)
