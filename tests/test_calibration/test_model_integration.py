"""FULLER on the real tiny MultiTaskBEVFusion: one backward with calibration
gives the gradients of an explicit reference built here from per-task
autograd.grad at the shared BEV map, the IMTL-G closed form (as published,
written with numpy) and modality magnitude equalisation at the fuser."""
import copy

import numpy as np
import pytest
import torch
from fuller.utils.config_utils import load_config
from mmengine.registry import init_default_scope

import fuller  # noqa: F401
from fuller.testing import make_multitask_batch
from mmdet3d.registry import MODELS
from fuller.testing import REPO_ROOT

TINY = REPO_ROOT / 'configs' / '_base_' / 'models' / \
    'bevfusion_multitask_tiny.py'


def build_model(task_magnitude='weights'):
    init_default_scope('mmdet3d')
    cfg = copy.deepcopy(load_config(str(TINY)).model)
    cfg.grad_calibrator = dict(task_method='imtl_g', modality_target='mean',
                               task_magnitude=task_magnitude)
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model.eval()  # no dropout, BN running stats: two passes agree


def imtl_g_closed_form(grads):
    """alpha_{2..T} = g_1 U^T (D U^T)^-1, alpha_1 = 1 - sum (Liu et al.)."""
    g = np.stack([x.reshape(-1).double().numpy() for x in grads])
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    D = g[0] - g[1:]
    U = u[0] - u[1:]
    rest = g[0] @ U.T @ np.linalg.inv(D @ U.T)
    return np.concatenate([[1 - rest.sum()], rest])


def task_losses(losses):
    out = {}
    for name, value in losses.items():
        if 'loss' in name:
            task = name.split('/')[0]
            out[task] = out.get(task, 0) + value
    return out


def reference_grads(model, batch, task_magnitude):
    cal = model.grad_calibrator
    taps = {}

    def split(shared, names):
        leaf = shared.detach().requires_grad_()
        taps['shared'] = (shared, leaf)
        return {n: leaf for n in names}

    def modalities(cam, lidar):
        leaves = (cam.detach().requires_grad_(),
                  lidar.detach().requires_grad_())
        taps['mod'] = ((cam, lidar), leaves)
        return leaves

    cal.split_shared, cal.calibrate_modalities = split, modalities
    try:
        per_task_loss = task_losses(model(**batch, mode='loss'))
    finally:
        del cal.split_shared, cal.calibrate_modalities
    shared, leaf = taps['shared']
    grads = []
    for loss in per_task_loss.values():  # head grads accumulate per task
        (g, ) = torch.autograd.grad(loss, leaf, retain_graph=True)
        grads.append(g)
        loss.backward(retain_graph=True, inputs=[
            p for n, p in model.named_parameters() if n.startswith('heads')])
    alpha = imtl_g_closed_form(grads)
    if task_magnitude == 'sum':  # same direction, length of the plain sum
        plain = float(sum(grads).norm())
        calibrated = float(sum(float(a) * g for a, g in zip(alpha, grads)
                               ).norm())
        alpha = alpha * plain / calibrated
    shared.backward(sum(float(a) * g for a, g in zip(alpha, grads)))
    (cam, lidar), (cam_leaf, lidar_leaf) = taps['mod']
    norms = [float(cam_leaf.grad.norm()), float(lidar_leaf.grad.norm())]
    target = np.mean(norms)
    torch.autograd.backward(
        [cam, lidar], [cam_leaf.grad * (target / norms[0]),
                       lidar_leaf.grad * (target / norms[1])])
    return alpha, {n: p.grad.clone() for n, p in model.named_parameters()
                   if p.grad is not None}


@pytest.mark.parametrize('task_magnitude', ['weights', 'sum'])
def test_one_backward_equals_explicit_reference(task_magnitude):
    model = build_model(task_magnitude)
    batch = make_multitask_batch(model, seeds=(0, ))
    model.zero_grad()
    alpha_ref, ref = reference_grads(model, batch, task_magnitude)
    model.zero_grad()
    model.grad_calibrator.record_stats = True
    losses = model(**batch, mode='loss')
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    got = {n: p.grad for n, p in model.named_parameters()
           if p.grad is not None}
    assert set(got) == set(ref)
    stats = model.grad_calibrator.last_stats
    np.testing.assert_allclose(
        [float(stats['task']['alpha'][t]) for t in ('det', 'seg')],
        alpha_ref, rtol=1e-4)
    # per tensor, relative to its norm: the two computations sum in other orders, and with one
    # thread single near-zero elements differ by more than an elementwise rtol allows; the
    # norm-wise gap is <= 1e-5 on 1 or 2 threads, a wrong weight or scale is >= 1e-2
    for name in ref:
        gap = float((got[name] - ref[name]).norm() / ref[name].norm().clamp(min=1e-12))
        assert gap < 1e-4, (name, gap)
    # the calibration really changed something: the plain sum differs
    model.zero_grad()
    model.grad_calibrator.enable_task = False
    model.grad_calibrator.enable_modality = False
    losses = model(**batch, mode='loss')
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    plain = model.fuser.conv.conv.weight.grad
    assert not torch.allclose(plain, ref['fuser.conv.conv.weight'],
                              rtol=1e-2)
