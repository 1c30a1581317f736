"""bev_pool against a naive loop, hand values, gradcheck; the benchmark's
cumsum reference against bev_pool."""
from pathlib import Path

import pytest
import torch

from fuller.models.view_transforms.bev_pool import bev_pool, flat_cell_index
from fuller.testing import load_script

REPO = Path(__file__).resolve().parents[2]


def naive_pool(feats, coords, batch_size, grid_shape):
    """One point at a time: the definition of sum pooling."""
    num_z, num_y, num_x = grid_shape
    out = torch.zeros(batch_size, feats.shape[1], num_z, num_y, num_x,
                      dtype=feats.dtype)
    for feat, (b, z, y, x) in zip(feats, coords.tolist()):
        if (0 <= b < batch_size and 0 <= z < num_z and 0 <= y < num_y
                and 0 <= x < num_x):
            out[b, :, z, y, x] += feat
    return out


def random_inputs(num_points=300, channels=3, batch_size=2,
                  grid_shape=(2, 5, 7), dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(num_points, channels, generator=gen, dtype=dtype)
    upper = torch.tensor((batch_size, ) + tuple(grid_shape))
    # About a third of the points fall outside along some axis.
    coords = (torch.rand(num_points, 4, generator=gen) * 1.25 * upper -
              0.1 * upper).floor().long()
    return feats, coords


def test_hand_computed_cells():
    feats = torch.tensor([[1., 10.], [2., 20.], [4., 40.], [8., 80.],
                          [16., 160.]])
    coords = torch.tensor([
        [0, 0, 1, 2],  # cell (b0, y1, x2)
        [0, 0, 1, 2],  # same cell: summed
        [1, 0, 0, 3],  # batch 1, y0, x3 (last column of a 2x4 grid)
        [0, 0, 2, 0],  # y = 2 is outside a Y = 2 grid: dropped
        [2, 0, 0, 0],  # batch 2 of 2: dropped
    ])
    out = bev_pool(feats, coords, batch_size=2, grid_shape=(1, 2, 4))
    expected = torch.zeros(2, 2, 1, 2, 4)
    expected[0, :, 0, 1, 2] = torch.tensor([3., 30.])
    expected[1, :, 0, 0, 3] = torch.tensor([4., 40.])
    assert out.shape == (2, 2, 1, 2, 4)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize('grid_shape', [(1, 4, 9), (3, 6, 5)])
def test_matches_naive_loop(grid_shape):
    feats, coords = random_inputs(grid_shape=grid_shape)
    out = bev_pool(feats, coords, 2, grid_shape)
    torch.testing.assert_close(out, naive_pool(feats, coords, 2, grid_shape))
    # The input really mixes kept and dropped points.
    kept = (flat_cell_index(coords, 2, grid_shape) < 2 * grid_shape[0] *
            grid_shape[1] * grid_shape[2])
    assert 0.3 < kept.float().mean() < 0.9


def test_gradcheck_float64():
    feats, coords = random_inputs(num_points=40, channels=2,
                                  grid_shape=(1, 3, 4), dtype=torch.float64)
    feats.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda f: bev_pool(f, coords, 2, (1, 3, 4)), (feats, ))


def test_gradient_of_dropped_points_is_zero():
    feats = torch.ones(3, 2, requires_grad=True)
    coords = torch.tensor([[0, 0, 0, 1], [0, 0, 5, 0], [0, -1, 0, 0]])
    grad_out = torch.arange(6.).view(1, 2, 1, 1, 3)
    bev_pool(feats, coords, 1, (1, 1, 3)).backward(grad_out)
    torch.testing.assert_close(
        feats.grad, torch.tensor([[1., 4.], [0., 0.], [0., 0.]]))


def test_empty_input_gives_zeros():
    out = bev_pool(torch.zeros(0, 5), torch.zeros(0, 4, dtype=torch.long), 2,
                   (1, 3, 4))
    assert out.shape == (2, 5, 1, 3, 4) and not out.any()


@pytest.mark.parametrize('feats,coords,err', [
    (torch.zeros(4, 2, 1), torch.zeros(4, 4, dtype=torch.long), ValueError),
    (torch.zeros(4, 2), torch.zeros(4, 3, dtype=torch.long), ValueError),
    (torch.zeros(4, 2), torch.zeros(5, 4, dtype=torch.long), ValueError),
    (torch.zeros(4, 2), torch.zeros(4, 4), TypeError),
])
def test_bad_input_raises(feats, coords, err):
    with pytest.raises(err, match='bev_pool.py'):
        bev_pool(feats, coords, 1, (1, 2, 2))


# CUDA vs CPU: tests/test_cuda/test_cuda_ops.py (pytest -m cuda).


def _load_benchmark():
    path = REPO / 'tools' / 'benchmarks' / 'bench_bev_pool.py'
    return load_script(path, 'bench_bev_pool')


def test_benchmark_reference_matches_naive_and_runs():
    bench = _load_benchmark()
    feats, coords = random_inputs(dtype=torch.float64)
    feats.requires_grad_(True)
    ref = bench.cumsum_pool_reference(feats, coords, 2, (2, 5, 7))
    torch.testing.assert_close(ref, naive_pool(feats.detach(), coords, 2,
                                               (2, 5, 7)))
    grad_out = torch.randn_like(ref)
    (ref_grad, ) = torch.autograd.grad(ref, feats, grad_out)
    ours = bev_pool(feats, coords, 2, (2, 5, 7))
    (our_grad, ) = torch.autograd.grad(ours, feats, grad_out)
    torch.testing.assert_close(ref_grad, our_grad)

    rows = bench.run(sizes=('tiny', ), device='cpu', warmup=0, repeat=1,
                     verbose=False)
    assert [r['mode'] for r in rows] == ['forward', 'forward+backward']
    for row in rows:
        assert row['ours_s'] > 0 and row['ref_s'] > 0
        assert row['max_abs_diff'] < 1e-4
