"""One backward with calibration == explicit per-task autograd.grad reference.

A toy fusion model (camera and LiDAR branches -> concat fuser -> shared trunk
-> det and seg heads) on a non-square BEV grid (Y=6, X=10). The reference is
computed in this file: per-task ``torch.autograd.grad`` w.r.t. the shared
feature, an independent numpy IMTL-G closed form, then explicit propagation
to the fuser inputs, rescale to the mean norm, and on to the branches.
"""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from fuller.calibration.calibrator import GradientCalibrator
from fuller.calibration.task_weights import compute_task_weights

Y, X = 6, 10
TASKS = ('det', 'seg')


def imtl_g_numpy(g: np.ndarray) -> np.ndarray:
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    d_mat, u_mat = g[0][None] - g[1:], u[0][None] - u[1:]
    rest = g[0] @ u_mat.T @ np.linalg.inv(d_mat @ u_mat.T)
    return np.concatenate([[1.0 - rest.sum()], rest])


class ToyFusion(nn.Module):

    def __init__(self):
        super().__init__()
        self.camera = nn.Conv2d(3, 4, 3, padding=1)
        self.lidar = nn.Conv2d(2, 4, 3, padding=1)
        self.fuser = nn.Conv2d(8, 6, 3, padding=1)
        self.trunk = nn.Conv2d(6, 6, 3, padding=1)
        self.heads = nn.ModuleDict(
            dict(det=nn.Conv2d(6, 2, 1), seg=nn.Conv2d(6, 3, 1)))

    def forward(self, batch, calibrator=None, seg_weight=1.0):
        cam = self.camera(batch['cam'])
        lidar = self.lidar(batch['lidar'])
        if calibrator is not None:
            cam, lidar = calibrator.calibrate_modalities(cam, lidar)
        shared = torch.tanh(self.trunk(torch.relu(
            self.fuser(torch.cat([cam, lidar * 30.0], 1)))))  # imbalance
        feats = (calibrator.split_shared(shared, TASKS) if calibrator
                 else dict.fromkeys(TASKS, shared))
        det = self.heads['det'](feats['det'])
        seg = self.heads['seg'](feats['seg'])
        losses = dict(
            det=((det - batch['det']) ** 2).mean(),
            seg=nn.functional.binary_cross_entropy_with_logits(
                seg, batch['seg']) * seg_weight)
        return losses, dict(cam=cam, lidar=lidar, shared=shared)


def make_batch(seed=0, batch=2, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return dict(cam=torch.randn(batch, 3, Y, X, generator=gen, dtype=dtype),
                lidar=torch.randn(batch, 2, Y, X, generator=gen, dtype=dtype),
                det=torch.randn(batch, 2, Y, X, generator=gen, dtype=dtype),
                seg=(torch.rand(batch, 3, Y, X, generator=gen) > 0.7
                     ).to(dtype))


def make_model(dtype=torch.float64):
    torch.manual_seed(0)
    return ToyFusion().to(dtype)


def calibrated_grads(model, batch, **cfg):
    calib = GradientCalibrator(**cfg)
    model.zero_grad()
    losses, _ = model(batch, calib)
    sum(losses.values()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}, calib


def reference_grads(model, batch, task_weights_fn=None, modality='mean'):
    """Explicit per-task autograd.grad, combination and modality rescale."""
    losses, taps = model(batch)
    params = dict(model.named_parameters())
    out = {}
    for task in TASKS:
        names = [n for n in params if n.startswith(f'heads.{task}.')]
        grads = torch.autograd.grad(losses[task], [params[n] for n in names],
                                    retain_graph=True)
        out.update(zip(names, grads))
    per_task = [torch.autograd.grad(losses[t], taps['shared'],
                                    retain_graph=True)[0] for t in TASKS]
    flat = np.stack([g.reshape(-1).double().numpy() for g in per_task])
    alpha = (imtl_g_numpy(flat) if task_weights_fn is None
             else task_weights_fn(flat))
    combined = sum(float(a) * g for a, g in zip(alpha, per_task))
    trunk = [n for n in params if n.startswith(('fuser.', 'trunk.'))]
    grads = torch.autograd.grad(
        taps['shared'],
        [params[n] for n in trunk] + [taps['cam'], taps['lidar']],
        combined, retain_graph=True)
    out.update(zip(trunk, grads[:len(trunk)]))
    g_cam, g_lidar = grads[len(trunk):]
    if modality is not None:
        norms = torch.stack([g_cam.norm(), g_lidar.norm()])
        target = {'mean': norms.mean(), 'max': norms.max(),
                  'camera': norms[0]}[modality]
        g_cam, g_lidar = g_cam * target / norms[0], g_lidar * target / norms[1]
    branch = [n for n in params if n.startswith(('camera.', 'lidar.'))]
    grads = torch.autograd.grad([taps['cam'], taps['lidar']],
                                [params[n] for n in branch], [g_cam, g_lidar])
    out.update(zip(branch, grads))
    return out, alpha


def _task_grads_inputs(model, batch):
    losses, taps = model(batch)
    return [(losses[t], taps['shared']) for t in TASKS]


def assert_grads_close(got, ref, rtol=1e-5, atol=1e-9):
    assert got.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=rtol, atol=atol,
                                   msg=f'gradient of {name}')


def test_one_backward_equals_explicit_reference():
    model, batch = make_model(), make_batch()
    got, calib = calibrated_grads(model, batch)
    ref, alpha = reference_grads(model, batch)
    assert_grads_close(got, ref)
    for name, grad in got.items():  # every parameter gets a gradient
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    stats = calib.last_stats
    np.testing.assert_allclose([stats['task']['alpha'][t] for t in TASKS],
                               alpha, rtol=1e-5)
    per_task = [torch.autograd.grad(loss, taps_shared, retain_graph=True)[0]
                for loss, taps_shared in _task_grads_inputs(model, batch)]
    cos = torch.nn.functional.cosine_similarity(
        per_task[0].reshape(-1), per_task[1].reshape(-1), dim=0)
    np.testing.assert_allclose(stats['task']['cos_matrix'],
                               [[1.0, float(cos)], [float(cos), 1.0]],
                               rtol=1e-5)
    np.testing.assert_allclose(
        [stats['task']['norm'][t] for t in TASKS],
        [float(g.norm()) for g in per_task], rtol=1e-5)
    mod = stats['modality']
    assert mod['ratio_before'] < 0.2  # lidar dominates before calibration
    assert mod['ratio_after'] == pytest.approx(1.0, rel=1e-6)
    scalars = calib.scalar_stats()
    assert {'calib/alpha/det', 'calib/cos/det-seg', 'calib/norm/task/det',
            'calib/norm/modality/camera', 'calib/modality_ratio/before',
            'calib/modality_ratio/after'} <= scalars.keys()


@pytest.mark.parametrize('method', ['sum', 'mgda_ub', 'pcgrad'])
def test_other_methods_equal_reference(method):
    model, batch = make_model(), make_batch(1)
    got, calib = calibrated_grads(model, batch, task_method=method, seed=3)

    def fn(flat):
        gen = torch.Generator().manual_seed(3 * 1_000_003 + 0)
        gram = torch.from_numpy(flat @ flat.T)
        return compute_task_weights(gram, method, generator=gen).alpha.numpy()

    ref, _ = reference_grads(model, batch, fn)
    assert_grads_close(got, ref)


def test_disabled_levels_are_plain_sum_and_heads_untouched():
    model, batch = make_model(), make_batch(2)
    got, _ = calibrated_grads(model, batch, enable_task=False,
                              enable_modality=False)
    model.zero_grad()
    losses, _ = model(batch)
    sum(losses.values()).backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters()}
    assert_grads_close(got, plain, rtol=0, atol=0)
    # with calibration on, heads keep exactly their own gradients.
    got_on, _ = calibrated_grads(model, batch)
    for name in plain:
        if name.startswith('heads.'):
            torch.testing.assert_close(got_on[name], plain[name], rtol=0,
                                       atol=0)
    # stats requested while disabled: recorded, gradients unchanged.
    calib = GradientCalibrator(enable_task=False, enable_modality=False)
    calib.record_stats = True
    model.zero_grad()
    losses, _ = model(batch, calib)
    sum(losses.values()).backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, plain[name])
    assert calib.last_stats['task']['alpha'] == {'det': 1.0, 'seg': 1.0}
    assert calib.last_stats['modality']['scale'] == {'camera': 1.0,
                                                     'lidar': 1.0}


def test_modality_calibration_equal_norms_same_directions():
    cam = torch.randn(2, 4, Y, X, dtype=torch.float64, requires_grad=True)
    lidar = torch.randn(2, 5, Y, X, dtype=torch.float64, requires_grad=True)
    w_cam, w_lidar = torch.randn_like(cam), 1e3 * torch.randn_like(lidar)
    for target in ('mean', 'max', 'min', 'camera', 'lidar'):
        calib = GradientCalibrator(modality_target=target, enable_task=False)
        c_out, l_out = calib.calibrate_modalities(cam, lidar)
        g_cam, g_lidar = torch.autograd.grad(
            (c_out * w_cam).sum() + (l_out * w_lidar).sum(), [cam, lidar])
        n = [w_cam.norm(), w_lidar.norm()]
        expected = {'mean': (n[0] + n[1]) / 2, 'max': n[1], 'min': n[0],
                    'camera': n[0], 'lidar': n[1]}[target]
        torch.testing.assert_close(g_cam.norm(), expected)
        torch.testing.assert_close(g_lidar.norm(), expected)
        torch.testing.assert_close(g_cam, w_cam * expected / n[0])
        torch.testing.assert_close(g_lidar, w_lidar * expected / n[1])


def test_missing_modality_passes_through():
    calib = GradientCalibrator()
    lidar = torch.randn(3, requires_grad=True)
    cam_out, lidar_out = calib.calibrate_modalities(None, lidar)
    assert cam_out is None and lidar_out is lidar
    with pytest.raises(ValueError, match='calibrate_modalities got 1'):
        calib.calibrate_modalities(lidar)


def test_unused_head_gets_zero_and_other_task_weight_one():
    shared_in = torch.randn(2, 3, Y, X, requires_grad=True)
    calib = GradientCalibrator()
    feats = calib.split_shared(shared_in * 2, ['det', 'seg', 'aux'])
    weight = torch.randn(2, 3, Y, X)
    (feats['det'] * weight).sum().backward()  # seg and aux never used
    torch.testing.assert_close(shared_in.grad, 2 * weight)
    task = calib.last_stats['task']
    assert task['alpha'] == {'det': 1.0, 'seg': 0.0, 'aux': 0.0}
    assert task['excluded'] == {'seg': 'zero', 'aux': 'zero'}


def test_nan_in_one_task_is_excluded_and_warned():
    model, batch = make_model(), make_batch(3)
    calib = GradientCalibrator()
    losses, _ = model(batch, calib, seg_weight=float('nan'))
    with pytest.warns(UserWarning, match="task 'seg' has a nonfinite"):
        sum(losses.values()).backward()
    for name, param in model.named_parameters():
        if not name.startswith('heads.seg'):
            assert torch.isfinite(param.grad).all(), name
    assert calib.last_stats['task']['alpha']['seg'] == 0.0
    assert calib.scalar_stats()['calib/excluded/seg'] == 1.0
    # the trunk now gets det's gradient only, rescaled as a single task.
    model_det = make_model()
    model_det.zero_grad()
    losses, _ = model_det(batch, GradientCalibrator(), seg_weight=0.0)
    losses['det'].backward()
    for name, param in model.named_parameters():
        if name.startswith(('trunk.', 'fuser.')):
            torch.testing.assert_close(param.grad,
                                       dict(model_det.named_parameters())
                                       [name].grad)
    with warnings.catch_warnings():  # warned once only
        warnings.simplefilter('error')
        losses, _ = model(batch, calib, seg_weight=float('nan'))
        sum(losses.values()).backward()


def test_identical_and_opposite_task_gradients_through_backward():
    x = torch.randn(2, 3, Y, X, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 3, Y, X, dtype=torch.float64)
    for factor, expected in ((3.0, 2 * 0.75 * w), (-2.0, torch.zeros_like(w))):
        # identical: alpha = (3/4, 1/4) -> 0.75 w + 0.25 * 3 w = 1.5 w;
        # opposite: alpha = (2/3, 1/3) -> 2/3 w - 2/3 w = 0.
        x.grad = None
        calib = GradientCalibrator()
        feats = calib.split_shared(x * 1, TASKS)
        ((feats['det'] * w).sum() + (feats['seg'] * factor * w).sum()
         ).backward()
        torch.testing.assert_close(x.grad, expected, atol=1e-6, rtol=1e-6)
        assert torch.isfinite(x.grad).all()
    assert calib.last_stats['task']['fallback'] == 'equal_contribution'
    assert calib.last_stats['task']['cos']['det-seg'] == pytest.approx(-1.0)


def test_nan_modality_gradient_is_zeroed():
    calib = GradientCalibrator(enable_task=False)
    cam = torch.randn(4, requires_grad=True)
    lidar = torch.randn(4, requires_grad=True)
    c_out, l_out = calib.calibrate_modalities(cam, lidar)
    with pytest.warns(UserWarning, match="modality 'camera'"):
        (c_out * float('nan') + l_out * 3.0).sum().backward()
    assert (cam.grad == 0).all()
    torch.testing.assert_close(lidar.grad, torch.full((4,), 3.0))


def test_fp16_and_bf16_shared_feature():
    rng = torch.Generator().manual_seed(5)
    base = torch.randn(2, 4, Y, X, generator=rng)
    w = [torch.randn(2, 4, Y, X, generator=rng),
         100 * torch.randn(2, 4, Y, X, generator=rng)]
    grads = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        leaf = base.to(dtype).detach().clone().requires_grad_()
        calib = GradientCalibrator()
        feats = calib.split_shared(leaf * 1, TASKS)
        loss = sum((feats[t].float() * w[i]).sum()
                   for i, t in enumerate(TASKS))
        loss.backward()
        assert leaf.grad.dtype == dtype and torch.isfinite(leaf.grad).all()
        grads[dtype] = leaf.grad.float()
    for dtype, tol in ((torch.float16, 2e-3), (torch.bfloat16, 2e-2)):
        torch.testing.assert_close(grads[dtype], grads[torch.float32],
                                   rtol=tol, atol=tol)
    # fp16 modality rescale that would overflow is clamped, not inf.
    calib = GradientCalibrator(modality_target='max', enable_task=False)
    cam = torch.zeros(8, dtype=torch.float16, requires_grad=True)
    lidar = torch.zeros(8, dtype=torch.float16, requires_grad=True)
    c_out, l_out = calib.calibrate_modalities(cam, lidar)
    g_cam = torch.tensor([60000.0] + [0.0] * 7, dtype=torch.float16)
    g_lidar = torch.full((8,), 60000.0, dtype=torch.float16)
    torch.autograd.backward([c_out, l_out], [g_cam, g_lidar])
    assert torch.isfinite(cam.grad).all() and cam.grad.dtype == torch.float16


def test_multi_level_shared_features_calibrated_jointly():
    a = torch.randn(2, 3, Y, X, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 3, Y // 2, X // 2, dtype=torch.float64,
                    requires_grad=True)
    w = [[torch.randn_like(a), torch.randn_like(b)] for _ in TASKS]
    calib = GradientCalibrator()
    feats = calib.split_shared([a, b], TASKS)
    assert isinstance(feats['det'], list) and len(feats['det']) == 2
    sum((f * wt).sum() for t, ws in zip(TASKS, w)
        for f, wt in zip(feats[t], ws)).backward()
    flat = np.stack([torch.cat([x.reshape(-1) for x in ws]).numpy()
                     for ws in w])
    alpha = imtl_g_numpy(flat)
    torch.testing.assert_close(a.grad, alpha[0] * w[0][0] + alpha[1] * w[1][0])
    torch.testing.assert_close(b.grad, alpha[0] * w[0][1] + alpha[1] * w[1][1])


def test_split_shared_outside_training_and_bad_names():
    calib = GradientCalibrator()
    x = torch.randn(3, requires_grad=True)
    with torch.no_grad():
        feats = calib.split_shared(x, TASKS)
    assert feats['det'] is x and feats['seg'] is x
    with pytest.raises(ValueError, match='distinct task names'):
        calib.split_shared(x, ['det', 'det'])
    with pytest.raises(ValueError, match='unknown task_method'):
        GradientCalibrator(task_method='nash')
    with pytest.raises(ValueError, match='unknown modality_target'):
        GradientCalibrator(modality_target='radar')
    # a head may not modify its view in place: clear autograd error.
    feats = calib.split_shared(x * 1, TASKS)
    with pytest.raises(RuntimeError, match='inplace'):
        feats['det'].relu_()


def test_benchmark_explicit_reference_agrees_with_one_backward():
    import importlib.util
    from pathlib import Path
    path = (Path(__file__).resolve().parents[2] / 'tools' / 'benchmarks' /
            'bench_calibration.py')
    spec = importlib.util.spec_from_file_location('bench_calibration', path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.run(
        lambda: bench.build_stand_in(batch=1, channels=4, y=8, x=12),
        iters=1, warmup=0)
    assert report['max_abs_grad_diff_fuller_vs_explicit'] < 1e-5
    for key in ('time_sum_s', 'time_fuller_s', 'time_explicit_s',
                'ratio_fuller_to_sum', 'ratio_explicit_to_sum'):
        assert report[key] > 0, key
