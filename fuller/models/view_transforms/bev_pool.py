"""Sum-pool frustum features into BEV cells, in pure PyTorch.

Shape shorthand:
    P   frustum points (all cameras, depth bins and feature pixels, flattened)
    C   feature channels
    B   batch size
    Z, Y, X  BEV cells along z, y, x of the (augmented) LiDAR frame

``coords`` rows are integer cell indices ``(b, iz, iy, ix)``, the zyx order of
mmdet3d voxel coordinates. The result is laid out (B, C, Z, Y, X): row = y,
column = x, as everywhere in fuller (see ``fuller.structures.frames``).

No compiled op is involved: the pooling is one ``index_add`` into a flat
cell table, so it runs (and differentiates) on any device torch supports.
Points outside the grid are routed to one extra "dump" row that is dropped
afterwards, which keeps every shape static and avoids boolean indexing.
"""
from typing import Sequence

import torch
from torch import Tensor

__all__ = ['bev_pool', 'flat_cell_index']


def _check_inputs(feats: Tensor, coords: Tensor, batch_size: int,
                  grid_shape: Sequence[int]) -> None:
    where = 'fuller/models/view_transforms/bev_pool.py'
    if feats.dim() != 2:
        raise ValueError(f'{where}: feats must be (P, C), got shape '
                         f'{tuple(feats.shape)}')
    if coords.dim() != 2 or coords.shape[1] != 4:
        raise ValueError(f'{where}: coords must be (P, 4) = (b, z, y, x), '
                         f'got shape {tuple(coords.shape)}')
    if coords.shape[0] != feats.shape[0]:
        raise ValueError(f'{where}: feats has {feats.shape[0]} points but '
                         f'coords has {coords.shape[0]}')
    if coords.dtype.is_floating_point or coords.dtype == torch.bool:
        raise TypeError(f'{where}: coords must be an integer tensor, got '
                        f'{coords.dtype}')
    if len(grid_shape) != 3 or min(grid_shape) < 1 or batch_size < 1:
        raise ValueError(f'{where}: need batch_size >= 1 and grid_shape = '
                         f'(Z, Y, X) of positive ints, got {batch_size}, '
                         f'{tuple(grid_shape)}')


def flat_cell_index(coords: Tensor, batch_size: int,
                    grid_shape: Sequence[int]) -> Tensor:
    """(P, 4) integer ``(b, z, y, x)`` -> (P,) flat cell index.

    The flat index of cell ``(b, z, y, x)`` is ``((b*Z + z)*Y + y)*X + x``;
    points outside ``[0, B) x [0, Z) x [0, Y) x [0, X)`` get the index
    ``B*Z*Y*X`` (one past the last cell).

    Args:
        coords: (P, 4) integer cell coordinates ``(b, z, y, x)``.
        batch_size: B.
        grid_shape: ``(Z, Y, X)``, cells of the pooling grid.
    """
    num_z, num_y, num_x = (int(s) for s in grid_shape)
    coords = coords.long()
    upper = coords.new_tensor([batch_size, num_z, num_y, num_x])
    inside = ((coords >= 0) & (coords < upper)).all(dim=1)
    b, z, y, x = coords.unbind(dim=1)
    flat = ((b * num_z + z) * num_y + y) * num_x + x
    num_cells = batch_size * num_z * num_y * num_x
    return torch.where(inside, flat, flat.new_full((), num_cells))


def bev_pool(feats: Tensor, coords: Tensor, batch_size: int,
             grid_shape: Sequence[int]) -> Tensor:
    """Sum the features of all points that fall into the same BEV cell.

    Args:
        feats: (P, C) point features (any float dtype, any device).
        coords: (P, 4) integer cell indices ``(b, iz, iy, ix)``; points with
            any index outside the grid or batch are ignored.
        batch_size: B.
        grid_shape: (Z, Y, X).

    Returns:
        (B, C, Z, Y, X) tensor of per-cell feature sums (zeros where no
        point fell). Differentiable with respect to ``feats``.
    """
    _check_inputs(feats, coords, batch_size, grid_shape)
    num_z, num_y, num_x = (int(s) for s in grid_shape)
    num_cells = batch_size * num_z * num_y * num_x
    flat = flat_cell_index(coords, batch_size, grid_shape)
    # One extra row collects the out-of-grid points and is sliced away.
    table = feats.new_zeros(num_cells + 1, feats.shape[1])
    table = table.index_add(0, flat, feats)
    bev = table[:num_cells].view(batch_size, num_z, num_y, num_x, -1)
    return bev.permute(0, 4, 1, 2, 3).contiguous()
