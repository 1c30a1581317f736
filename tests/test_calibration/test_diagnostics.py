"""What each task gets and what each branch steps: the calib/share*,
calib/proj_rel and calib/norm/step scalars against values computed here by
hand or from the explicit gradient vectors (not from the Gram matrix)."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub

from fuller.calibration import (GradientCalibrationHook, GradientCalibrator,
                                task_shares)
from tests.test_calibration.test_calibration_hook import (REPO, TinyMultiTask,
                                                          make_data)

TASKS = ('det', 'seg', 'aux')


def calibrated_stats(vectors, enable_task=True, method='imtl_g'):
    """Losses L_k = v_k . x on one shared leaf x: gradient k is v_k."""
    names = TASKS[:len(vectors)]
    x = torch.zeros(len(vectors[0]), dtype=torch.float64, requires_grad=True)
    cal = GradientCalibrator(task_method=method, enable_task=enable_task)
    cal.record_stats = True  # as the hook does on logged iterations
    feats = cal.split_shared(x, names)
    sum(torch.dot(torch.tensor(v, dtype=torch.float64), feats[n])
        for v, n in zip(vectors, names)).backward()
    return cal.scalar_stats(), x.grad.numpy()


def test_shares_orthogonal_by_hand():
    # g_det = (3, 0), g_seg = (0, 1). IMTL-G: 3 a_det = a_seg, sum 1 ->
    # alpha = (1/4, 3/4), g = (3/4, 3/4); |g|^2 = 9/8.
    stats, grad = calibrated_stats([(3.0, 0.0), (0.0, 1.0)])
    np.testing.assert_allclose(grad, [0.75, 0.75], rtol=1e-6)
    want = {'share/det': 0.5, 'share/seg': 0.5,  # (9/16) / (9/8) each
            'share_plain/det': 0.9, 'share_plain/seg': 0.1,  # 9/10, 1/10
            'proj_rel/det': 0.25, 'proj_rel/seg': 0.75}  # (3/4)/3, (3/4)/1
    for key, value in want.items():
        assert stats[f'calib/{key}'] == pytest.approx(value, rel=1e-6), key


def test_shares_from_vectors_non_orthogonal():
    a, b = np.array([2.0, 0.0, 0.0]), np.array([1.0, 1.0, 0.0])
    stats, grad = calibrated_stats([a, b])
    # equal projections on u_a = (1,0,0), u_b = (1,1,0)/sqrt2 with sum 1:
    # 2 a1 + a2 = sqrt2 (a1 + a2) -> a1 = sqrt2 - 1
    alpha = np.array([math.sqrt(2) - 1, 2 - math.sqrt(2)])
    assert stats['calib/alpha/det'] == pytest.approx(alpha[0], rel=1e-6)
    g = alpha[0] * a + alpha[1] * b
    np.testing.assert_allclose(grad, g, rtol=1e-6)
    plain = a + b
    for name, vec, w in (('det', a, alpha[0]), ('seg', b, alpha[1])):
        unit = vec / np.linalg.norm(vec)
        assert stats[f'calib/share/{name}'] == pytest.approx(
            w * vec @ g / (g @ g), rel=1e-6)
        assert stats[f'calib/share_plain/{name}'] == pytest.approx(
            vec @ plain / (plain @ plain), rel=1e-6)
        assert stats[f'calib/proj_rel/{name}'] == pytest.approx(
            (g @ unit) / (plain @ unit), rel=1e-6)
    # IMTL-G equalises the projections, so det (larger gradient) gets less
    # than under the plain sum
    assert stats['calib/proj_rel/det'] < 1 < 1 / stats['calib/proj_rel/seg']


def test_task_shares_three_tasks_and_excluded():
    rng = np.random.default_rng(3)
    vecs = rng.normal(size=(3, 7))
    alpha = np.array([0.2, 0.5, 1.3])
    gram = torch.tensor(vecs @ vecs.T)
    out = task_shares(gram, torch.tensor(alpha))
    g, s = alpha @ vecs, vecs.sum(0)
    np.testing.assert_allclose(out['share'], alpha * (vecs @ g) / (g @ g),
                               rtol=1e-10)
    assert float(out['share'].sum()) == pytest.approx(1.0)
    np.testing.assert_allclose(out['share_plain'], vecs @ s / (s @ s),
                               rtol=1e-10)
    np.testing.assert_allclose(out['proj_rel'], (vecs @ g) / (vecs @ s),
                               rtol=1e-10)
    # a task with zero gradient (no targets) is excluded and not logged
    stats, _ = calibrated_stats([(3.0, 0.0), (0.0, 1.0), (0.0, 0.0)])
    assert stats['calib/share/det'] == pytest.approx(0.5, rel=1e-6)
    assert 'calib/share/aux' not in stats and 'calib/proj_rel/aux' not in stats
    # no update at all: NaN shares, which scalar_stats leaves out
    out = task_shares(torch.zeros(2, 2), torch.tensor([1.0, 1.0]))
    assert torch.isnan(out['share']).all()


def test_shares_equal_plain_when_level_off():
    stats, _ = calibrated_stats([(2.0, 0.0), (1.0, 1.0)], enable_task=False)
    for name in ('det', 'seg'):
        assert stats[f'calib/share/{name}'] == pytest.approx(
            stats[f'calib/share_plain/{name}'], rel=1e-9)
        assert stats[f'calib/proj_rel/{name}'] == pytest.approx(1.0)


def run_hooked(steps, with_hook):
    model = TinyMultiTask()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    runner = SimpleNamespace(
        model=model, hooks=[], train_dataloader=list(range(10)),
        message_hub=MessageHub.get_instance(f'test_diag_{with_hook}'),
        optim_wrapper=SimpleNamespace(optimizer=opt, loss_scaler=None))
    prefixes = dict(camera=('camera.', ), lidar=('lidar.', ),
                    trunk=('trunk.', ))
    hook = GradientCalibrationHook(log_interval=2, param_prefixes=prefixes)
    if with_hook:
        hook.before_train(runner)
    measured = []
    for it in range(steps):
        runner.iter = it
        if with_hook:
            hook.before_train_iter(runner, batch_idx=it)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.zero_grad()
        sum(model(**make_data(it)).values()).backward()
        opt.step()
        measured.append({g: math.sqrt(sum(
            float((p.detach() - before[n]).double().pow(2).sum())
            for n, p in model.named_parameters() if n.startswith(pre)))
            for g, pre in prefixes.items()})
        if with_hook:
            hook.after_train_iter(runner, batch_idx=it)
    return model, runner.message_hub, measured


def test_branch_steps_logged_and_numerics_unchanged():
    model, hub, measured = run_hooked(4, with_hook=True)
    for group in ('camera', 'lidar', 'trunk'):
        logged = hub.log_scalars[f'train/calib/norm/step/{group}'].data[0]
        assert len(logged) == 2  # log_interval=2: iterations 1 and 3
        np.testing.assert_allclose(
            logged, [measured[1][group], measured[3][group]], rtol=1e-6)
        assert hub.get_scalar(f'train/calib/step_rel/{group}').current() > 0
    # the measurement changes nothing: same weights as without the hook
    reference, _, _ = run_hooked(4, with_hook=False)
    for (name, p), q in zip(model.named_parameters(),
                            reference.parameters()):
        assert torch.equal(p, q), name


def test_plot_draws_shares_with_plain_dashed(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'plot_calibration',
        REPO / 'tools' / 'analysis' / 'plot_calibration.py')
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    log = tmp_path / 'scalars.json'
    rows = [{'step': s, 'calib/share/det': 0.5, 'calib/share/seg': 0.5,
             'calib/share_plain/det': 0.9, 'calib/share_plain/seg': 0.1,
             'calib/proj_rel/det': 0.25, 'calib/norm/step/camera': 1e-3 * s,
             'calib/norm/step/lidar': 2e-3 * s} for s in (1, 2, 3)]
    log.write_text('\n'.join(json.dumps(r) for r in rows) + '\n')
    written = {p.name for p in plot.plot_calibration(str(log),
                                                     str(tmp_path / 'out'))}
    assert written == {'calib_share.png', 'calib_proj_rel.png',
                       'calib_norm_step.png'}
    # the plain-sum series are in the share figure, not a figure of their own
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    captured = []
    real_close = plt.close

    def keep(fig):
        captured.append([(line.get_label(), line.get_linestyle())
                         for line in fig.axes[0].get_lines()])
        real_close(fig)

    plt.close = keep
    try:
        plot.plot_calibration(str(log), str(tmp_path / 'out2'))
    finally:
        plt.close = real_close
    share = next(c for c in captured if ('det', '-') in c and
                 ('det (plain sum)', '--') in c)
    assert ('seg (plain sum)', '--') in share
