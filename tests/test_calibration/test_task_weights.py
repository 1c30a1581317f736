"""Task weights (IMTL-G, MGDA-UB, PCGrad, sum) and modality scales.

Expected values are hand-computed or come from an independent numpy version
of the published closed forms.
"""
import math

import numpy as np
import pytest
import torch

from fuller.calibration.task_weights import (compute_task_weights,
                                             cosine_matrix, gram_matrix,
                                             modality_scales)


def imtl_g_numpy(g: np.ndarray) -> np.ndarray:
    """IMTL-G closed form of Liu et al. 2021, written with D and U."""
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    d_mat = g[0][None] - g[1:]
    u_mat = u[0][None] - u[1:]
    rest = g[0] @ u_mat.T @ np.linalg.inv(d_mat @ u_mat.T)
    return np.concatenate([[1.0 - rest.sum()], rest])


def weights(g, method='imtl_g', **kw):
    g = torch.as_tensor(np.asarray(g, dtype=np.float64))
    return compute_task_weights(g @ g.T, method, **kw)


def test_imtl_g_two_tasks_by_hand():
    # g1 = (3, 0), g2 = (0, 4): equal projections need 3 a1 = 4 a2, a1+a2=1.
    res = weights([[3.0, 0.0], [0.0, 4.0]])
    np.testing.assert_allclose(res.alpha.numpy(), [4 / 7, 3 / 7], rtol=1e-12)
    # non-orthogonal: g1 = (2, 0), g2 = (1, 1); for two tasks a_i ~ 1/|g_i|.
    res = weights([[2.0, 0.0], [1.0, 1.0]])
    a1 = math.sqrt(2) / (2 + math.sqrt(2))
    np.testing.assert_allclose(res.alpha.numpy(), [a1, 1 - a1], rtol=1e-12)
    assert res.fallback is None and res.excluded == []


def test_imtl_g_three_tasks_by_hand_and_closed_form():
    # orthogonal, norms 1, 2, 4: a1 = 2 a2 = 4 a3, sum 1 -> (4, 2, 1) / 7.
    res = weights([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 4.0]])
    np.testing.assert_allclose(res.alpha.numpy(), [4 / 7, 2 / 7, 1 / 7],
                               rtol=1e-12)
    rng = np.random.default_rng(0)
    g = rng.normal(size=(3, 7)) * np.array([[1.0], [3.0], [0.2]])
    np.testing.assert_allclose(weights(g).alpha.numpy(), imtl_g_numpy(g),
                               rtol=1e-9)


@pytest.mark.parametrize('num_tasks', [2, 3, 4, 5])
def test_imtl_g_equal_projections_random(num_tasks):
    rng = np.random.default_rng(num_tasks)
    g = rng.normal(size=(num_tasks, 64)) * rng.uniform(0.1, 10, (num_tasks, 1))
    alpha = weights(g).alpha.numpy()
    agg = alpha @ g
    proj = (g / np.linalg.norm(g, axis=1, keepdims=True)) @ agg
    np.testing.assert_allclose(proj, np.full(num_tasks, proj[0]), rtol=1e-9)
    assert proj[0] > 0
    assert alpha.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(alpha, imtl_g_numpy(g), rtol=1e-8)


def test_imtl_g_scale_invariance():
    rng = np.random.default_rng(1)
    g = rng.normal(size=(3, 16))
    base = weights(g).alpha.numpy()
    for scale in (1e-4, 1e4):  # e.g. an AMP loss scale
        np.testing.assert_allclose(weights(g * scale).alpha.numpy(), base,
                                   rtol=1e-10)
    # rescaling one task keeps the direction of the aggregated gradient.
    g2 = g.copy()
    g2[1] *= 50.0
    agg = base @ g
    agg2 = weights(g2).alpha.numpy() @ g2
    cos = agg @ agg2 / np.linalg.norm(agg) / np.linalg.norm(agg2)
    assert cos == pytest.approx(1.0, abs=1e-12)


def test_imtl_g_norm_ratio_1e6_float32_gram():
    rng = np.random.default_rng(2)
    g = rng.normal(size=(2, 256)).astype(np.float32)
    g[1] *= 1e6
    gram = gram_matrix([torch.from_numpy(g[0]), torch.from_numpy(g[1])])
    assert gram.dtype == torch.float32
    alpha = compute_task_weights(gram, 'imtl_g').alpha.numpy()
    n = np.linalg.norm(g.astype(np.float64), axis=1)
    np.testing.assert_allclose(alpha, [n[1] / n.sum(), n[0] / n.sum()],
                               rtol=1e-5)
    proj = (g / n[:, None]).astype(np.float64) @ (alpha @ g.astype(np.float64))
    assert proj[0] == pytest.approx(proj[1], rel=1e-5)


def test_zero_task_is_excluded():
    g = [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 3.0]]
    res = weights(g)
    assert res.excluded == [(1, 'zero')]
    assert res.alpha[1] == 0
    expected = imtl_g_numpy(np.array([g[0], g[2]]))
    np.testing.assert_allclose(res.alpha.numpy()[[0, 2]], expected, rtol=1e-9)
    one_left = weights([[0.0, 0.0], [2.0, 1.0]])
    np.testing.assert_array_equal(one_left.alpha.numpy(), [0.0, 1.0])
    none_left = weights([[0.0, 0.0], [0.0, 0.0]])
    np.testing.assert_array_equal(none_left.alpha.numpy(), [0.0, 0.0])
    assert none_left.fallback == 'no_valid_task'


def test_identical_and_opposite_gradients():
    g = np.array([1.0, -2.0, 0.5])
    same = weights([g, 3 * g])
    # identical directions: every alpha satisfies equal projections; the
    # pseudo-inverse gives equal contributions a_i ~ 1/|g_i| -> (3/4, 1/4).
    np.testing.assert_allclose(same.alpha.numpy(), [0.75, 0.25], rtol=1e-9)
    opp = weights([g, -2 * g])
    # opposite: the only equal-projection point is g = 0.
    assert opp.fallback == 'equal_contribution'
    np.testing.assert_allclose(opp.alpha.numpy(), [2 / 3, 1 / 3], rtol=1e-9)
    agg = opp.alpha.numpy() @ np.array([g, -2 * g])
    np.testing.assert_allclose(agg, 0.0, atol=1e-12)
    three_same = weights([g, 2 * g, 4 * g])
    np.testing.assert_allclose(three_same.alpha.numpy(), [4 / 7, 2 / 7, 1 / 7],
                               rtol=1e-9)


def test_linearly_dependent_three_tasks_uses_pinv():
    g = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    res = weights(g)
    assert res.fallback == 'pinv'
    assert torch.isfinite(res.alpha).all()
    assert float(res.alpha.sum()) == pytest.approx(1.0, abs=1e-12)
    proj = (g / np.linalg.norm(g, axis=1, keepdims=True)) @ (
        res.alpha.numpy() @ g)
    assert (proj > 0).all()


@pytest.mark.parametrize('method', ['sum', 'imtl_g', 'mgda_ub', 'pcgrad'])
@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_nonfinite_task_excluded(method, bad):
    g = [torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, bad, 0.0]),
         torch.tensor([-1.0, 0.5, 2.0])]
    gram = gram_matrix(g)
    res = compute_task_weights(gram, method,
                               generator=torch.Generator().manual_seed(0))
    assert res.excluded == [(1, 'nonfinite')]
    assert res.alpha[1] == 0 and torch.isfinite(res.alpha).all()
    clean = torch.stack([g[0], g[2]]).double()
    ref = compute_task_weights(clean @ clean.T, method,
                               generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(res.alpha[[0, 2]], ref.alpha, rtol=1e-6,
                               atol=0)


def test_sum_method():
    res = weights([[1.0, 0.0], [0.0, 0.0], [5.0, 5.0]], 'sum')
    np.testing.assert_array_equal(res.alpha.numpy(), [1.0, 0.0, 1.0])


def test_mgda_ub_two_tasks_by_hand():
    # g1 = (1, 0), g2 = (0, 2): min |a g1 + (1-a) g2|^2 -> a = 4/5.
    res = weights([[1.0, 0.0], [0.0, 2.0]], 'mgda_ub')
    np.testing.assert_allclose(res.alpha.numpy(), [0.8, 0.2], atol=1e-9)
    # g2 = 2 g1: the min-norm point of the segment is g1 itself.
    res = weights([[1.0, 1.0], [2.0, 2.0]], 'mgda_ub')
    np.testing.assert_allclose(res.alpha.numpy(), [1.0, 0.0], atol=1e-9)


def test_mgda_ub_kkt_random():
    rng = np.random.default_rng(3)
    g = rng.normal(size=(4, 6)) + 0.5
    alpha = weights(g, 'mgda_ub').alpha.numpy()
    assert alpha.min() >= 0 and alpha.sum() == pytest.approx(1.0)
    agg = alpha @ g
    dots = g @ agg  # KKT: g_i . g* >= |g*|^2, equality where alpha_i > 0
    assert (dots >= agg @ agg - 1e-6).all()
    active = alpha > 1e-4
    np.testing.assert_allclose(dots[active], agg @ agg, rtol=1e-4)


def test_pcgrad_two_tasks_by_hand():
    # g1=(1,0), g2=(-1,1): g1' = g1 + g2/2 = (.5,.5); g2' = g2 + g1 = (0,1).
    res = weights([[1.0, 0.0], [-1.0, 1.0]], 'pcgrad',
                  generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(res.alpha.numpy(), [2.0, 1.5], rtol=1e-12)
    # no conflict: PCGrad is the plain sum.
    res = weights([[1.0, 0.2], [0.5, 1.0]], 'pcgrad')
    np.testing.assert_allclose(res.alpha.numpy(), [1.0, 1.0], rtol=1e-12)


def test_pcgrad_matches_vector_implementation_and_is_seeded():
    rng = np.random.default_rng(4)
    g = rng.normal(size=(4, 5))
    res = weights(g, 'pcgrad', generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)
    projected = []
    for i in range(4):
        gi = g[i].copy()
        for j in torch.randperm(4, generator=gen).tolist():
            if j != i and gi @ g[j] < 0:
                gi -= gi @ g[j] / (g[j] @ g[j]) * g[j]
        projected.append(gi)
    np.testing.assert_allclose(res.alpha.numpy() @ g, np.sum(projected, 0),
                               rtol=1e-10, atol=1e-12)
    again = weights(g, 'pcgrad', generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(res.alpha, again.alpha, rtol=0, atol=0)


def test_gram_and_cosine_fp16():
    a = torch.full((1000,), 300.0, dtype=torch.float16)  # |a|^2 = 9e7 > fp16
    b = torch.full((1000,), -150.0, dtype=torch.float16)
    gram = gram_matrix([a, None, b])
    assert gram.dtype == torch.float32
    np.testing.assert_allclose(
        gram.numpy(), [[9e7, 0, -4.5e7], [0, 0, 0], [-4.5e7, 0, 2.25e7]],
        rtol=1e-6)
    cos = cosine_matrix(gram)
    np.testing.assert_allclose(cos.numpy(),
                               [[1, 0, -1], [0, 0, 0], [-1, 0, 1]], atol=1e-7)


def test_unknown_method_error():
    with pytest.raises(ValueError, match='unknown task method'):
        compute_task_weights(torch.eye(2), 'gradnorm')


def test_modality_scales_targets():
    sq = torch.tensor([4.0, 100.0])  # norms 2 and 10
    for target, tgt in (('mean', 6.0), ('max', 10.0), ('min', 2.0),
                        ('camera', 2.0), ('lidar', 10.0)):
        scales, value = modality_scales(sq, target)
        assert value == pytest.approx(tgt)
        np.testing.assert_allclose(scales.numpy(), [tgt / 2, tgt / 10])
    scales, _ = modality_scales(torch.tensor([0.0, 9.0]), 'mean')
    np.testing.assert_allclose(scales.numpy(), [1.0, 1.0])  # zero: untouched
    scales, _ = modality_scales(torch.tensor([float('nan'), 9.0]), 'mean')
    np.testing.assert_allclose(scales.numpy(), [0.0, 1.0])  # NaN: dropped
    scales, _ = modality_scales(torch.tensor([4.0, 0.0]), 'lidar')
    np.testing.assert_allclose(scales.numpy(), [1.0, 1.0])
    with pytest.raises(ValueError, match='unknown modality target'):
        modality_scales(sq, 'radar')


def test_match_sum_magnitude_keeps_direction_and_plain_sum_length():
    from fuller.calibration.task_weights import match_sum_magnitude
    g = torch.randn(3, 50, generator=torch.Generator().manual_seed(7),
                    dtype=torch.float64)
    g[0] *= 30.0  # one task with a much larger gradient
    gram = g @ g.T
    weights = compute_task_weights(gram, 'imtl_g')
    scaled = match_sum_magnitude(gram, weights)
    combined = weights.alpha @ g
    combined_scaled = scaled @ g
    # same direction ...
    cos = torch.dot(combined, combined_scaled) / (
        combined.norm() * combined_scaled.norm())
    assert float(cos) == pytest.approx(1.0, abs=1e-12)
    # ... as long as the plain sum, which is much longer than IMTL-G's
    assert float(combined_scaled.norm()) == pytest.approx(
        float(g.sum(0).norm()), rel=1e-9)
    assert combined.norm() < 0.2 * g.sum(0).norm()


def test_match_sum_magnitude_ignores_excluded_and_degenerate():
    from fuller.calibration.task_weights import (TaskWeights,
                                                 match_sum_magnitude)
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0], [float('nan'), 1.0]],
                     dtype=torch.float64)
    gram = g @ g.T
    weights = TaskWeights(alpha=torch.tensor([0.5, 0.5, 0.0],
                                             dtype=torch.float64),
                          excluded=[(2, 'nonfinite')])
    scaled = match_sum_magnitude(gram, weights)
    assert torch.isfinite(scaled).all() and scaled[2] == 0
    assert float((scaled[:2] @ g[:2]).norm()) == pytest.approx(5 ** 0.5)
    zero = TaskWeights(alpha=torch.tensor([0.5, 0.5], dtype=torch.float64))
    out = match_sum_magnitude(torch.zeros(2, 2, dtype=torch.float64), zero)
    assert torch.equal(out, zero.alpha)
