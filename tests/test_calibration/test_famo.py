"""FAMO (fuller.calibration.famo) against its published update rule on
hand-made losses, then on the tiny model.

The expectations are written independently of the module: the softmax with
``math.exp``, the model direction as the gradient of the published objective
``c * sum_k z_k log l_k`` (c constant) taken by autograd, the logits' step as
``torch.optim.Adam`` (weight decay = the published gamma) applied to the
softmax's vector-Jacobian product taken by autograd, and Adam's first step
(lr * sign of the gradient) by hand.
"""
import math
from types import SimpleNamespace

import pytest
import torch

from fuller.calibration import FAMOHook, FAMOWeighting
from fuller.testing import (REPO_ROOT, build_model_from_config,
                            make_multitask_data, model_sample_kwargs,
                            one_thread)

SUM_TINY = REPO_ROOT / 'configs' / 'bevfusion' / 'bevfusion_tiny_1xb2-24e_synthetic-nus.py'
FAMO_TINY = REPO_ROOT / 'configs' / 'study' / 'bevfusion_tiny-famo_1xb2-24e_synthetic-nus.py'
TASKS = ('det', 'seg')
LOGITS = (0.3, -0.2)


def _losses(det, seg):
    return dict(det=torch.tensor(det), seg=torch.tensor(seg))


def test_factors_are_the_published_convex_weights():
    famo = FAMOWeighting(TASKS)
    famo.logits.copy_(torch.tensor(LOGITS))
    e = [math.exp(w) for w in LOGITS]
    z = [v / sum(e) for v in e]
    losses = (4.0, 0.5)
    c = 1 / sum(zk / lk for zk, lk in zip(z, losses))
    want = [c * zk / lk for zk, lk in zip(z, losses)]   # 0.0798..., 0.9201...
    got = famo.factors(_losses(*losses))
    assert [float(got[t]) for t in TASKS] == pytest.approx(want, rel=1e-6)
    assert sum(want) == pytest.approx(1.0)
    assert [float(famo.weights()[t]) for t in TASKS] == pytest.approx(z, rel=1e-6)


def test_scaled_sum_has_the_gradient_of_the_published_objective():
    """Two tasks on one parameter vector theta: backprop of sum_k a_k l_k
    (the model's form) equals that of c * sum_k z_k log l_k."""
    famo = FAMOWeighting(TASKS, min_losses=dict(det=0.25))
    famo.logits.copy_(torch.tensor(LOGITS))
    theta = torch.tensor([1.5, -0.7, 0.2], requires_grad=True)

    def task_losses():
        return dict(det=(theta ** 2).sum() * 3 + 1,
                    seg=torch.sigmoid(theta).prod() + 0.1 * theta[0] ** 4)

    losses = task_losses()
    a = famo.factors(losses)
    mine, = torch.autograd.grad(sum(a[t] * losses[t] for t in TASKS), theta)

    losses = task_losses()
    z = torch.softmax(torch.tensor(LOGITS), 0)
    shifted = [losses['det'] - 0.25 + famo.eps, losses['seg'] + famo.eps]
    c = 1 / sum(zk / lk.detach() for zk, lk in zip(z, shifted))
    published, = torch.autograd.grad(
        c * sum(zk * lk.log() for zk, lk in zip(z, shifted)), theta)
    torch.testing.assert_close(mine, published, rtol=1e-6, atol=1e-7)


def test_first_update_by_hand():
    """Uniform weights; det fell by half, seg by a tenth: the softmax VJP is
    +(d_det - d_seg)/4 for det and the opposite for seg, and Adam's first
    step moves each logit by lr against the sign: det loses weight."""
    famo = FAMOWeighting(TASKS, lr=0.025)
    famo.update(_losses(4.0, 1.0), _losses(2.0, 0.9))
    assert famo.logits.tolist() == pytest.approx([-0.025, 0.025], abs=1e-6)
    assert int(famo.num_updates) == 1
    z = famo.weights()
    assert float(z['seg']) > 0.5 > float(z['det'])


def test_updates_match_torch_adam_on_the_softmax_vjp():
    # gamma far above the published 1e-3, so that the L2 form of the decay
    # (added to the gradient, then normalised by Adam) shows
    lr, gamma = 0.025, 0.1
    famo = FAMOWeighting(TASKS, lr=lr, weight_decay=gamma)
    famo.logits.copy_(torch.tensor(LOGITS))
    w = torch.nn.Parameter(torch.tensor(LOGITS))
    adam = torch.optim.Adam([w], lr=lr, weight_decay=gamma)
    steps = [((4.0, 1.0), (3.0, 0.95)), ((3.1, 0.9), (3.0, 0.7)),
             ((2.9, 0.7), (2.0, 0.69))]
    for before, after in steps:
        famo.update(_losses(*before), _losses(*after))
        delta = torch.tensor([math.log(b / a) for b, a in zip(before, after)])
        w.grad, = torch.autograd.grad(torch.softmax(w, 0), w, grad_outputs=delta)
        adam.step()
    torch.testing.assert_close(famo.logits, w.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('kwargs, losses, match', [
    (dict(tasks=('det',)), None, 'two or more distinct tasks'),
    (dict(min_losses=dict(map=0.1)), None, r"unknown tasks \['map'\]"),
    (dict(lr=0.0), None, 'lr > 0'),
    (dict(), dict(det=torch.tensor(1.0)), r"lack tasks \['seg'\]"),
    (dict(), dict(det=torch.tensor(1.0), seg=torch.tensor(float('nan'))),
     'finite'),
    (dict(min_losses=dict(seg=0.5)),
     dict(det=torch.tensor(1.0), seg=torch.tensor(0.2)), 'at least min_losses'),
])
def test_bad_settings_and_losses_are_named(kwargs, losses, match):
    with pytest.raises((ValueError, KeyError), match=match):
        FAMOWeighting(**kwargs).factors(losses)


# ------------------------------------------------------------ the tiny model
def _model(**overrides):
    return build_model_from_config(
        SUM_TINY, seed=0, model_overrides=dict(
            dict(loss_balancer=dict(type='FAMOWeighting')), **overrides))


def test_model_scales_each_task_by_its_factor():
    with one_thread():
        model = _model()
        raw = make_multitask_data((0, 1), **model_sample_kwargs(model, num_cams=2))
        data = model.data_preprocessor(raw, True)
        torch.manual_seed(0)
        losses = model(**data, mode='loss')
        plain_model = _model(loss_balancer=None)
        torch.manual_seed(0)  # dropout of the detection head's decoder
        plain = plain_model(**data, mode='loss')
    totals = {t: sum(float(v.detach()) for k, v in plain.items() if k.startswith(t + '/'))
              for t in TASKS}
    for t in TASKS:
        assert float(losses[f'famo/task_total/{t}']) == pytest.approx(
            totals[t], rel=1e-5)
        assert float(losses[f'famo/weight/{t}']) == pytest.approx(0.5)
    # uniform weights: a_k = l_k^-1 / sum_j l_j^-1, so every task's balanced
    # total is the same, 1 / sum_j l_j^-1
    want = 1 / sum(1 / totals[t] for t in TASKS)
    for t in TASKS:
        balanced = sum(float(v.detach()) for k, v in losses.items()
                       if k.startswith(t + '/') and 'loss' in k)
        assert balanced == pytest.approx(want, rel=1e-4)
    assert not any('loss' in k for k in losses if k.startswith('famo/'))


@pytest.mark.parametrize('overrides, match', [
    (dict(seg_head=None), 'needs two task heads'),
    (dict(grad_calibrator=dict(task_method='imtl_g')), 'enable_task=False'),
])
def test_model_refuses_a_balancer_it_cannot_use(overrides, match):
    with pytest.raises(ValueError, match=match):
        _model(**overrides)


def test_hook_updates_the_logits_and_restores_the_buffers():
    with one_thread():
        model = _model()
        optim = torch.optim.AdamW(model.parameters(), lr=2e-3)
        raw = make_multitask_data((0, 1), **model_sample_kwargs(model, num_cams=2))
        data = model.data_preprocessor(raw, True)
        losses = model(**data, mode='loss')
        total, _ = model.parse_losses(losses)
        total.backward()
        optim.step()
        buffers = {k: v.clone() for k, v in model.named_buffers()
                   if not k.startswith('loss_balancer.')}
        before = dict(model.loss_balancer.last_losses)
        runner = SimpleNamespace(model=model, optim_wrapper=SimpleNamespace())
        FAMOHook().after_train_iter(runner, 0, data_batch=raw)
    after = model.loss_balancer.last_losses
    assert int(model.loss_balancer.num_updates) == 1
    delta = [math.log(float(before[t]) / float(after[t])) for t in TASKS]
    # the task that fell more loses weight, by Adam's first step (lr)
    falls_more = TASKS[0] if delta[0] > delta[1] else TASKS[1]
    assert float(model.loss_balancer.logits[TASKS.index(falls_more)]) == \
        pytest.approx(-0.025, abs=1e-6)
    for k, v in model.named_buffers():
        if k in buffers:
            torch.testing.assert_close(v, buffers[k], rtol=0, atol=0)
    state = model.state_dict()
    for key in ('logits', 'exp_avg', 'exp_avg_sq', 'num_updates'):
        assert f'loss_balancer.{key}' in state


def test_hook_refuses_a_model_without_balancer():
    runner = SimpleNamespace(model=torch.nn.Linear(2, 2),
                             optim_wrapper=SimpleNamespace())
    with pytest.raises(RuntimeError, match='no loss_balancer'):
        FAMOHook().before_train(runner)


def test_famo_config_builds_with_its_hook():
    from fuller.utils.config_utils import load_config
    cfg = load_config(str(FAMO_TINY))
    assert cfg.model.loss_balancer.type == 'FAMOWeighting'
    assert [h.type for h in cfg.custom_hooks].count('FAMOHook') == 1
    model = build_model_from_config(cfg, seed=0, init_weights=False)
    assert isinstance(model.loss_balancer, FAMOWeighting)


def test_famo_config_trains_and_resumes_through_tools_train(synthetic_dataroot, tmp_path):
    """tools/train.py with the FAMO config: the hook moves the logged task
    weights off uniform; the checkpoint holds the logits and their update
    count; a resumed run continues the count."""
    import json
    import subprocess
    import sys

    import fuller  # noqa: F401  (weights_only allow-list)

    def train(epochs, *extra):
        proc = subprocess.run(
            [sys.executable, str(REPO_ROOT / 'tools' / 'train.py'), str(FAMO_TINY),
             '--work-dir', str(tmp_path), '--data-root', str(synthetic_dataroot), *extra,
             '--cfg-options', f'train_cfg.max_epochs={epochs}', 'train_cfg.val_interval=10',
             'default_hooks.logger.interval=1'],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        return torch.load(tmp_path / f'epoch_{epochs}.pth', weights_only=True)

    first = train(1)['state_dict']
    iters = int(first['loss_balancer.num_updates'])
    assert iters >= 1
    scalars = next(tmp_path.glob('*/vis_data/scalars.json'))
    logged = [json.loads(line) for line in scalars.read_text().splitlines()]
    weights = [r['famo/weight/det'] for r in logged if 'famo/weight/det' in r]
    assert weights[0] == pytest.approx(0.5) and weights[-1] != pytest.approx(0.5)
    z = torch.softmax(first['loss_balancer.logits'], 0)
    assert float(z.sum()) == pytest.approx(1.0)
    second = train(2, '--resume')['state_dict']
    assert int(second['loss_balancer.num_updates']) == 2 * iters
