"""Box codes and centre-heatmap targets of the query detection head.

Shorthand: G boxes, E = 10 code size, NC classes, Y/X BEV cells.

Frame: the (augmented) LiDAR frame; boxes are mmdet3d ``LiDARInstance3DBoxes``
tensors ``[x, y, z, l, w, h, yaw(, vx, vy)]`` with the bottom-centre origin.
Grid coordinates ``(gx, gy)`` are continuous cell units on a ``BEVGrid``:
cell ``(iy, ix)`` spans ``[ix, ix + 1) x [iy, iy + 1)`` and the metric point is
``x = x_min + gx * dx``, ``y = y_min + gy * dy``.

Code layout (E = 10)::

    [gx, gy, z_gravity, log l, log w, log h, sin yaw, cos yaw, vx, vy]
"""
from typing import Dict, Sequence

import torch
from torch import Tensor

from fuller.structures.frames import BEVGrid

CODE_SIZE = 10
#: Where each regression output of the head sits in the code vector.
CODE_SLICES: Dict[str, slice] = dict(
    center=slice(0, 2),
    height=slice(2, 3),
    dim=slice(3, 6),
    rot=slice(6, 8),
    vel=slice(8, 10))


class TransFusionDetCoder:
    """Encode LiDAR boxes to grid-relative codes and back.

    Args:
        grid: the BEV grid of the head's input map.
    """

    def __init__(self, grid: BEVGrid):
        self.grid = grid

    def _origin_and_cell(self, ref: Tensor):
        origin = ref.new_tensor([self.grid.x_range[0], self.grid.y_range[0]])
        cell = ref.new_tensor(self.grid.cell_size)
        return origin, cell

    def encode(self, boxes_lidar: Tensor) -> Tensor:
        """(G, 7 or 9) bottom-centre LiDAR boxes -> (G, E) codes.

        Missing or NaN velocities become 0.
        """
        if boxes_lidar.dim() != 2 or boxes_lidar.shape[1] not in (7, 9):
            raise ValueError('TransFusionDetCoder.encode: boxes must be '
                             f'(G, 7) or (G, 9), got {tuple(boxes_lidar.shape)}')
        origin, cell = self._origin_and_cell(boxes_lidar)
        xy_grid = (boxes_lidar[:, :2] - origin) / cell
        dims = boxes_lidar[:, 3:6]
        z_gravity = boxes_lidar[:, 2:3] + 0.5 * dims[:, 2:3]
        yaw = boxes_lidar[:, 6:7]
        if boxes_lidar.shape[1] == 9:
            vel = torch.nan_to_num(boxes_lidar[:, 7:9], nan=0.0)
        else:
            vel = boxes_lidar.new_zeros((boxes_lidar.shape[0], 2))
        return torch.cat([xy_grid, z_gravity, dims.clamp(min=1e-3).log(),
                          yaw.sin(), yaw.cos(), vel], dim=1)

    def decode(self, codes: Tensor) -> Tensor:
        """(..., E) codes -> (..., 9) bottom-centre LiDAR boxes."""
        origin, cell = self._origin_and_cell(codes)
        xy = codes[..., 0:2] * cell + origin
        dims = codes[..., 3:6].exp()
        z_bottom = codes[..., 2:3] - 0.5 * dims[..., 2:3]
        yaw = torch.atan2(codes[..., 6:7], codes[..., 7:8])
        return torch.cat([xy, z_bottom, dims, yaw, codes[..., 8:10]], dim=-1)

    def normalized_centers(self, codes: Tensor) -> Tensor:
        """(..., E) codes -> (..., 2) centres scaled to [0, 1] over the grid
        extent (the unit of the matching L1 cost)."""
        size = codes.new_tensor([self.grid.nx, self.grid.ny])
        return codes[..., 0:2] / size

    @staticmethod
    def pack(outputs: Dict[str, Tensor]) -> Tensor:
        """Concatenate the head's regression outputs (each (..., k)) in code
        order into (..., E)."""
        return torch.cat([outputs[name] for name in CODE_SLICES], dim=-1)


def gaussian_radius(length: Tensor, width: Tensor,
                    min_overlap: float) -> Tensor:
    """Largest centre shift (in cells) that keeps a box of ``length x width``
    cells above ``min_overlap`` IoU with itself (CornerNet's three cases),
    elementwise over tensors."""
    side_sum, area = length + width, length * width
    o = min_overlap
    r1 = (side_sum + torch.sqrt(side_sum**2 - 4 * area * (1 - o) /
                                (1 + o))) / 2
    r2 = (2 * side_sum + torch.sqrt(4 * side_sum**2 - 16 *
                                    (1 - o) * area)) / 2
    r3 = (-2 * o * side_sum + torch.sqrt(
        (2 * o * side_sum)**2 - 16 * o * (o - 1) * area)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def center_heatmap_targets(boxes_lidar: Tensor, labels: Tensor,
                           grid: BEVGrid, num_classes: int,
                           gaussian_overlap: float,
                           min_radius: int) -> Tensor:
    """Per-class Gaussian centre heatmaps, CenterPoint style, vectorised.

    Each box puts a Gaussian with peak 1 on the cell that holds its centre;
    radius ``max(min_radius, int(gaussian_radius(l, w)))`` in cells, sigma
    ``(2 r + 1) / 6``, cut to the ``(2 r + 1)^2`` window. Overlaps keep the
    maximum. Boxes whose centre lies outside the grid are skipped.

    Args:
        boxes_lidar: (G, >=7) LiDAR boxes (only x, y, l, w are used).
        labels: (G,) class indices in ``[0, num_classes)``.
        grid: the BEV grid of the heatmap (Y, X cells).
        num_classes: NC, heatmap channels.
        gaussian_overlap: minimum overlap of ``gaussian_radius``.
        min_radius: smallest radius, in cells.

    Returns:
        (NC, Y, X) float heatmap.
    """
    ny, nx = grid.shape
    heat = boxes_lidar.new_zeros((num_classes, ny * nx))
    if boxes_lidar.shape[0] == 0:
        return heat.view(num_classes, ny, nx)
    origin = boxes_lidar.new_tensor([grid.x_range[0], grid.y_range[0]])
    cell = boxes_lidar.new_tensor(grid.cell_size)
    centers = torch.floor((boxes_lidar[:, :2] - origin) / cell).long()
    inside = ((centers[:, 0] >= 0) & (centers[:, 0] < nx) &
              (centers[:, 1] >= 0) & (centers[:, 1] < ny))
    centers, labels = centers[inside], labels[inside].long()
    dims = boxes_lidar[inside, 3:5] / cell                # (G', 2) cells
    radius = gaussian_radius(dims[:, 0], dims[:, 1], gaussian_overlap)
    radius = radius.long().clamp(min=int(min_radius))     # (G',)
    sigma = (2 * radius + 1).to(heat.dtype) / 6

    def axis_gaussian(n: int, c: Tensor) -> Tensor:       # (G', n)
        d = torch.arange(n, device=heat.device)[None] - c[:, None]
        g = torch.exp(-(d.to(heat.dtype)**2) / (2 * sigma[:, None]**2))
        return g * (d.abs() <= radius[:, None])

    gauss = (axis_gaussian(ny, centers[:, 1])[:, :, None] *
             axis_gaussian(nx, centers[:, 0])[:, None, :])  # (G', Y, X)
    gauss = gauss * (gauss >= torch.finfo(heat.dtype).eps)
    index = labels[:, None].expand(-1, ny * nx)
    heat.scatter_reduce_(0, index, gauss.flatten(1), reduce='amax')
    return heat.view(num_classes, ny, nx)


def code_weights_tensor(code_weights: Sequence[float]) -> Tensor:
    """Validate and convert the per-code-entry L1 weights."""
    if len(code_weights) != CODE_SIZE:
        raise ValueError(f'code_weights needs {CODE_SIZE} entries '
                         f'{list(CODE_SLICES)}, got {len(code_weights)}')
    return torch.tensor(list(code_weights), dtype=torch.float32)


def axis_aligned_corners(boxes_lidar: Tensor) -> Tensor:
    """(..., >=6) bottom-centre boxes -> (..., 6) axis-aligned corners
    (x1, y1, z1, x2, y2, z2), ignoring yaw (for the optional IoU loss).

    Args:
        boxes_lidar: (..., >=6) LiDAR-frame boxes (x, y, z, l, w, h, ...),
            z at the bottom centre.
    """
    half = boxes_lidar[..., 3:6] / 2
    center = torch.cat([boxes_lidar[..., :2],
                        boxes_lidar[..., 2:3] + half[..., 2:]], dim=-1)
    return torch.cat([center - half, center + half], dim=-1)
