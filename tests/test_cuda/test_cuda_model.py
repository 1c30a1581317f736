"""The multi-task model on CUDA: one FULLER training step of the tiny model
equals the same step on CPU (same weights, same hand-made batch), and the
calibration stays finite under AMP (float16 with a GradScaler, bfloat16) at
the full size of configs/fuller/fuller_lidar-cam_voxel0075_second_secfpn_
8xb4-cyclic-20e_nus-det-seg.py.

Run with ``pytest -m cuda`` on a GPU machine (tools/gpu_check.sh); without
a GPU every test here is collected and skipped with the reason.
"""
import copy
import math

import pytest
import torch
from torch import nn

from fuller.testing import (build_model_from_config, cuda_marks,
                            exact_float32, make_multitask_batch,
                            model_sample_kwargs)
from fuller.testing import REPO_ROOT

pytestmark = cuda_marks()
TINY = REPO_ROOT / 'configs' / '_base_' / 'models' / \
    'bevfusion_multitask_tiny.py'
FULL = REPO_ROOT / 'configs' / 'fuller' / \
    'fuller_lidar-cam_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det-seg.py'


@pytest.fixture(autouse=True)
def no_tf32():
    """No TF32 in matmuls/convs: CPU and CUDA compare at float32."""
    with exact_float32():
        yield


def build(cfg_path, full_size=False):
    """Random weights (no torchvision download), seed 0; the tiny model
    with FULLER's calibration switched on."""
    overrides = None if full_size else dict(grad_calibrator=dict(
        task_method='imtl_g', modality_target='mean'))
    model = build_model_from_config(cfg_path, model_overrides=overrides)
    model.train()
    for module in model.modules():  # RNG streams differ per device
        if isinstance(module, nn.Dropout):
            module.eval()
    return model


def total_loss(losses):
    return sum(v for k, v in losses.items() if 'loss' in k)


def training_step(model, batch):
    """forward, one backward (FULLER calibrates inside it), SGD step."""
    data = make_multitask_batch(model, seeds=batch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.grad_calibrator.record_stats = True
    losses = model(**data, mode='loss')
    total_loss(losses).backward()
    grads = {n: p.grad.detach().cpu().clone()
             for n, p in model.named_parameters() if p.grad is not None}
    optimizer.step()
    stats = model.grad_calibrator.last_stats
    return dict(
        losses={k: float(v) for k, v in losses.items() if 'loss' in k},
        grads=grads,
        params={n: p.detach().cpu().clone()
                for n, p in model.named_parameters()},
        alpha=[float(stats['task']['alpha'][t]) for t in ('det', 'seg')],
        scale=[float(stats['modality']['scale'][m])
               for m in ('camera', 'lidar')])


def rel_err(got, ref):
    return float((got - ref).norm() / ref.norm().clamp(min=1e-12))


def test_tiny_fuller_training_step_cuda_equals_cpu():
    model_cpu = build(TINY)
    model_cuda = copy.deepcopy(model_cpu).cuda()
    ref = training_step(model_cpu, (0, 1))
    got = training_step(model_cuda, (0, 1))
    assert set(got['losses']) == set(ref['losses'])
    for name, value in ref['losses'].items():
        assert math.isclose(got['losses'][name], value, rel_tol=1e-3,
                            abs_tol=1e-5), (name, got['losses'][name], value)
    for key in ('alpha', 'scale'):  # FULLER's weights of this step
        for g, r in zip(got[key], ref[key]):
            assert math.isclose(g, r, rel_tol=1e-3), (key, got[key],
                                                      ref[key])
    assert set(got['grads']) == set(ref['grads'])
    bad = {n: rel_err(got['grads'][n], g) for n, g in ref['grads'].items()
           if g.norm() > 1e-8 and rel_err(got['grads'][n], g) > 1e-2}
    assert not bad, f'gradients differ (relative norm error): {bad}'
    total = sum(rel_err(got['grads'][n], g) for n, g in ref['grads'].items()
                if g.norm() > 1e-8) / len(ref['grads'])
    assert total < 1e-3, f'mean relative gradient error {total:.2e}'
    for name, p in ref['params'].items():
        torch.testing.assert_close(got['params'][name], p, rtol=1e-3,
                                   atol=1e-4, msg=name)


@pytest.fixture(scope='module')
def full_model():
    return build(FULL, full_size=True).cuda()


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_full_size_calibration_finite_under_amp(full_model, dtype):
    """Up to 4 AMP steps on a 6-camera 256x704 batch of 2: the FULLER
    weights and scales are finite on every step, and on every step whose
    gradients the GradScaler finds finite, all unscaled gradients are
    finite (float16 may overflow at the initial scale: then the step is
    skipped, the scale halves, as in training)."""
    model = full_model
    cal = model.grad_calibrator
    assert cal.enable_task and cal.enable_modality
    cal.record_stats = True
    data = make_multitask_batch(model, seeds=(0, 1),
                                **model_sample_kwargs(model, num_cams=6))
    assert data['inputs']['imgs'].shape == (2, 6, 3, 256, 704)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    # start at 2**10, not the default 2**16, so that the four steps are not
    # all spent halving the scale of a freshly initialised model
    scaler = torch.amp.GradScaler('cuda', init_scale=2.**10,
                                  enabled=dtype == torch.float16)
    good_steps = 0
    for _ in range(4):
        optimizer.zero_grad(set_to_none=True)
        cal.grad_scale = scaler.get_scale() if scaler.is_enabled() else None
        with torch.autocast('cuda', dtype=dtype):
            losses = model(**copy.deepcopy(data), mode='loss')
        loss = total_loss(losses)
        assert torch.isfinite(loss), {k: float(v) for k, v in losses.items()}
        scaler.scale(loss).backward()
        stats = cal.last_stats
        values = (list(stats['task']['alpha'].values()) +
                  list(stats['modality']['scale'].values()))
        assert all(math.isfinite(float(v)) for v in values), stats
        scaler.unscale_(optimizer)
        finite = all(torch.isfinite(p.grad).all()
                     for p in model.parameters() if p.grad is not None)
        scale_before = scaler.get_scale() if scaler.is_enabled() else 1.0
        scaler.step(optimizer)
        scaler.update()
        if finite:
            good_steps += 1
        else:
            assert dtype == torch.float16, 'bfloat16 gradients overflowed'
            assert scaler.get_scale() < scale_before
    assert good_steps >= 2
