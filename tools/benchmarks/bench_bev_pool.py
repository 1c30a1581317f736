"""Time fuller's ``bev_pool`` against the LSS "cumsum trick" in the same run.

Shape shorthand: B batch, N cameras, D depth bins, fH x fW feature pixels,
C channels, Z/Y/X BEV cells; P = B*N*D*fH*fW frustum points.

The reference below is the pooling of Lift-Splat-Shoot (Philion & Fidler,
2020), written from its description: drop out-of-grid points, sort points by
cell rank, take a cumulative sum, keep the last entry of each run of equal
ranks and difference consecutive kept entries; its backward gathers the
output gradient back to every point of a run.

Frustum cell coordinates are made by a small analytic ring of N pinhole
cameras around the ego car (depth bins from 1 m), so the load is as uneven as
in a real model: many points per cell near the car, points leaving the grid
far away.

Usage::

    python tools/benchmarks/bench_bev_pool.py                  # per device
    python tools/benchmarks/bench_bev_pool.py --sizes small bevfusion
"""
import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple


@dataclass(frozen=True)
class BenchSize:
    batch: int
    cams: int
    depth_bins: int
    feat_hw: Tuple[int, int]
    channels: int
    grid_shape: Tuple[int, int, int]  # (Z, Y, X)
    half_extent_m: float = 54.0

    @property
    def num_points(self) -> int:
        return (self.batch * self.cams * self.depth_bins * self.feat_hw[0] *
                self.feat_hw[1])


SIZES: Dict[str, BenchSize] = {
    # BEVFusion camera branch: 6 x 118 x 32 x 88 frustum, 80 channels.
    'bevfusion': BenchSize(1, 6, 118, (32, 88), 80, (1, 180, 180)),
    # A quarter of the frustum and channels, for a shared CPU.
    'small': BenchSize(1, 6, 59, (16, 44), 40, (1, 180, 180)),
    'tiny': BenchSize(2, 2, 6, (3, 5), 4, (2, 7, 9), 4.0),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', nargs='+', choices=sorted(SIZES))
    parser.add_argument('--device', help='cpu, cuda, cuda:1 ... '
                        '(default: cuda if available)')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--threads', type=int,
                        help='torch CPU threads (default: torch default)')
    return parser


if __name__ == '__main__':
    build_parser().parse_args()  # `--help` and argument errors before the imports below

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from fuller.models.view_transforms.bev_pool import (  # noqa: E402
    bev_pool, flat_cell_index)


class _CumsumPool(torch.autograd.Function):
    """Sorted points -> one summed row per occupied cell (LSS trick)."""

    @staticmethod
    def forward(ctx, feats_sorted: Tensor, ranks_sorted: Tensor):
        csum = feats_sorted.cumsum(0)
        last = torch.ones_like(ranks_sorted, dtype=torch.bool)
        last[:-1] = ranks_sorted[1:] != ranks_sorted[:-1]
        csum, ranks = csum[last], ranks_sorted[last]
        sums = torch.cat((csum[:1], csum[1:] - csum[:-1]))
        ctx.save_for_backward(last.cumsum(0) - last.long())
        ctx.mark_non_differentiable(ranks)
        return sums, ranks

    @staticmethod
    def backward(ctx, grad_sums: Tensor, grad_ranks: Optional[Tensor]):
        (run_of_point, ) = ctx.saved_tensors
        return grad_sums[run_of_point], None


def cumsum_pool_reference(feats: Tensor, coords: Tensor, batch_size: int,
                          grid_shape: Sequence[int]) -> Tensor:
    """LSS-style pooling with the same contract as ``bev_pool``."""
    num_z, num_y, num_x = grid_shape
    num_cells = batch_size * num_z * num_y * num_x
    ranks = flat_cell_index(coords, batch_size, grid_shape)
    kept = ranks < num_cells
    feats, ranks = feats[kept], ranks[kept]
    order = ranks.argsort()
    sums, cells = _CumsumPool.apply(feats[order], ranks[order])
    table = feats.new_zeros(num_cells, feats.shape[1])
    table = table.index_put((cells, ), sums)
    bev = table.view(batch_size, num_z, num_y, num_x, -1)
    return bev.permute(0, 4, 1, 2, 3).contiguous()


def make_inputs(size: BenchSize, device: torch.device,
                seed: int = 0) -> Tuple[Tensor, Tensor]:
    """(P, C) random features and (P, 4) cells of a ring of cameras."""
    gen = torch.Generator().manual_seed(seed)
    fh, fw = size.feat_hw
    num_z, num_y, num_x = size.grid_shape
    depth = 1.0 + 0.5 * torch.arange(size.depth_bins, dtype=torch.float64)
    # Each camera sees +-35 deg horizontally and +-15 deg vertically.
    azim = torch.linspace(-0.61, 0.61, fw, dtype=torch.float64)
    elev = torch.linspace(0.26, -0.26, fh, dtype=torch.float64)
    yaw = torch.arange(size.cams, dtype=torch.float64) * (2 * math.pi)
    yaw = yaw / size.cams
    ang = yaw.view(-1, 1, 1, 1) + azim.view(1, 1, 1, -1)  # (N, 1, 1, fW)
    rng = depth.view(1, -1, 1, 1) / torch.cos(azim).view(1, 1, 1, -1)
    x = rng * torch.cos(ang)
    y = rng * torch.sin(ang)
    z = 1.5 + depth.view(1, -1, 1, 1) * torch.tan(elev).view(1, 1, -1, 1)
    x, y, z = torch.broadcast_tensors(x, y, z)  # (N, D, fH, fW)
    ext = size.half_extent_m
    ix = ((x + ext) / (2 * ext) * num_x).floor().long()
    iy = ((y + ext) / (2 * ext) * num_y).floor().long()
    iz = ((z + 5.0) / 8.0 * num_z).floor().long()  # z in [-5, 3) m
    cell = torch.stack((iz, iy, ix), dim=-1).reshape(1, -1, 3)
    cell = cell.expand(size.batch, -1, -1)
    batch_idx = torch.arange(size.batch).view(-1, 1, 1).expand(
        -1, cell.shape[1], 1)
    coords = torch.cat((batch_idx, cell), dim=-1).reshape(-1, 4)
    feats = torch.randn(size.num_points, size.channels, generator=gen)
    return feats.to(device), coords.to(device)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_calls(fns: Dict[str, Callable[[], object]], device: torch.device,
               warmup: int, repeat: int) -> Dict[str, float]:
    """Fastest seconds per call of each function. Calls are interleaved so
    that load from other processes hits every contender alike, and the
    minimum over repeats is the least disturbed estimate."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    best = {name: float('inf') for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def _bench_one(name: str, size: BenchSize, device: torch.device, warmup: int,
               repeat: int) -> List[dict]:
    feats, coords = make_inputs(size, device)
    grad_out = torch.randn(size.batch, size.channels, *size.grid_shape,
                           device=device)
    pools = {'bev_pool': bev_pool, 'cumsum_ref': cumsum_pool_reference}
    with torch.no_grad():
        outs = [p(feats, coords, size.batch, size.grid_shape)
                for p in pools.values()]
    max_diff = (outs[0] - outs[1]).abs().max().item()
    rows = []
    for mode in ('forward', 'forward+backward'):
        fns = {}
        for pname, pool in pools.items():
            if mode == 'forward':
                def fn(pool=pool):
                    with torch.no_grad():
                        return pool(feats, coords, size.batch,
                                    size.grid_shape)
            else:
                leaf = feats.detach().requires_grad_(True)

                def fn(pool=pool, leaf=leaf):
                    out = pool(leaf, coords, size.batch, size.grid_shape)
                    out.backward(grad_out)
                    leaf.grad = None
            fns[pname] = fn
        secs = time_calls(fns, device, warmup, repeat)
        rows.append(dict(size=name, mode=mode, device=str(device),
                         points=size.num_points, channels=size.channels,
                         ours_s=secs['bev_pool'], ref_s=secs['cumsum_ref'],
                         ours_samples_per_s=size.batch / secs['bev_pool'],
                         ref_samples_per_s=size.batch / secs['cumsum_ref'],
                         speedup=secs['cumsum_ref'] / secs['bev_pool'],
                         max_abs_diff=max_diff))
    return rows


def run(sizes: Optional[Sequence[str]] = None,
        device: Optional[str] = None,
        warmup: int = 1,
        repeat: int = 5,
        verbose: bool = True) -> List[dict]:
    """Benchmark both poolings on each named size; returns one row per
    (size, mode). ``sizes`` defaults to 'bevfusion' on CUDA, 'small' on CPU.
    ``speedup`` is reference time / bev_pool time (>1: ours is faster)."""
    dev = torch.device(device or ('cuda' if torch.cuda.is_available()
                                  else 'cpu'))
    if sizes is None:
        sizes = ('bevfusion', ) if dev.type == 'cuda' else ('small', )
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        raise ValueError(f'tools/benchmarks/bench_bev_pool.py: unknown sizes '
                         f'{unknown}; choose from {sorted(SIZES)}')
    rows = []
    for name in sizes:
        rows.extend(_bench_one(name, SIZES[name], dev, warmup, repeat))
    if verbose:
        print(f'device={dev} torch={torch.__version__} '
              f'threads={torch.get_num_threads()}')
        print(f'{"size":>10} {"mode":>17} {"points":>9} {"C":>3} '
              f'{"ours ms":>9} {"ref ms":>9} {"ours smp/s":>10} '
              f'{"ref smp/s":>10} {"speedup":>7} {"max|diff|":>9}')
        for r in rows:
            print(f'{r["size"]:>10} {r["mode"]:>17} {r["points"]:>9} '
                  f'{r["channels"]:>3} {1e3 * r["ours_s"]:>9.2f} '
                  f'{1e3 * r["ref_s"]:>9.2f} '
                  f'{r["ours_samples_per_s"]:>10.2f} '
                  f'{r["ref_samples_per_s"]:>10.2f} {r["speedup"]:>7.2f} '
                  f'{r["max_abs_diff"]:>9.1e}')
    return rows


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    run(args.sizes, args.device, args.warmup, args.repeat)


if __name__ == '__main__':
    main()
