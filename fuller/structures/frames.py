"""Coordinate frames and the BEV grid.

Frames used throughout fuller (all right-handed, metres):

- ``lidar``: LIDAR_TOP sensor frame. x forward, y left, z up.
- ``ego``: vehicle body frame at the rear axle, same axis convention.
- ``global``: the map frame of the log (x east, y north, z up).
- ``cam``: camera frame. x right, y down, z forward (optical axis).
- ``img``: pixel frame. u (column) right, v (row) down; homogeneous
  ``(u * d, v * d, d, 1)`` after multiplying a ``cam`` point by ``cam2img``.
  Pixel centres sit at integer (u, v) (the OpenCV / nuScenes intrinsics
  convention): pixel (row r, column c) covers [c - 0.5, c + 0.5) in u.
  ``img_aug_matrix`` maps original to augmented pixels in this convention.

Transforms are homogeneous 4x4 matrices named ``a2b`` that map column
vectors in frame ``a`` to frame ``b``: ``p_b = a2b @ p_a``. Composition reads
right to left: ``lidar2img = cam2img @ lidar2cam``.

BEV tensors are laid out (B, C, Y, X): row index = y cell, column index = x
cell, row 0 at the smallest y. This is the order of mmdet3d's zyx voxel
coordinates and of its ``SparseEncoder`` output.

::

                 +x (forward, columns grow with x)
                  ^
                  |
     +y (left) <--+  lidar / ego frame seen from above (z out of page)
"""
from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor]


def make_transform(rotation: ArrayLike, translation: ArrayLike) -> np.ndarray:
    """Build a 4x4 ``a2b`` matrix (float64) from a 3x3 ``rotation`` and a
    3-vector ``translation`` (the origin of frame a in frame b)."""
    mat = np.eye(4, dtype=np.float64)
    mat[:3, :3] = np.asarray(rotation, dtype=np.float64)
    mat[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return mat


def invert_transform(a2b: ArrayLike) -> ArrayLike:
    """Invert a rigid (or any invertible) homogeneous 4x4 transform.

    Works on numpy arrays and on torch tensors of shape (..., 4, 4): ``a2b``
    in, ``b2a`` out (numpy: float64).
    """
    if isinstance(a2b, torch.Tensor):
        return torch.linalg.inv(a2b)
    return np.linalg.inv(np.asarray(a2b, dtype=np.float64))


def compose(*transforms: ArrayLike) -> ArrayLike:
    """``compose(b2c, a2b) == b2c @ a2b`` (= ``a2c``), right to left."""
    out = transforms[0]
    for t in transforms[1:]:
        out = out @ t
    return out


def apply_transform(a2b: ArrayLike, points_a: ArrayLike) -> ArrayLike:
    """Apply the 4x4 transform ``a2b`` to ``points_a``, points of shape
    (P, 3) in frame a (row vectors); returns (P, 3) in frame b, numpy or
    torch as ``points_a``."""
    if isinstance(points_a, torch.Tensor):
        a2b = torch.as_tensor(a2b, dtype=points_a.dtype,
                              device=points_a.device)
        return points_a @ a2b[:3, :3].T + a2b[:3, 3]
    a2b = np.asarray(a2b)
    return points_a @ a2b[:3, :3].T + a2b[:3, 3]


@dataclass(frozen=True)
class BEVGrid:
    """An axis-aligned BEV grid in the (augmented) LiDAR frame.

    Args:
        x_range: (x_min, x_max) in metres.
        y_range: (y_min, y_max) in metres.
        cell_size: (dx, dy) in metres; a scalar means square cells.

    Cell ``(iy, ix)`` covers ``[x_min + ix*dx, x_min + (ix+1)*dx)`` by
    ``[y_min + iy*dy, y_min + (iy+1)*dy)``; tensors are indexed ``[.., iy, ix]``.
    """
    x_range: Tuple[float, float]
    y_range: Tuple[float, float]
    cell_size: Tuple[float, float]

    def __post_init__(self):
        cell = self.cell_size
        if np.isscalar(cell):
            cell = (float(cell), float(cell))
        object.__setattr__(self, 'x_range', tuple(map(float, self.x_range)))
        object.__setattr__(self, 'y_range', tuple(map(float, self.y_range)))
        object.__setattr__(self, 'cell_size', tuple(map(float, cell)))
        for name, (lo, hi), d in (('x', self.x_range, self.cell_size[0]),
                                  ('y', self.y_range, self.cell_size[1])):
            n = (hi - lo) / d
            if hi <= lo or d <= 0 or abs(n - round(n)) > 1e-6:
                raise ValueError(
                    f'BEVGrid: {name} range {(lo, hi)} is not a positive '
                    f'whole number of {d} m cells')

    @classmethod
    def from_point_cloud_range(cls, point_cloud_range: Sequence[float],
                               cell_size) -> 'BEVGrid':
        """From mmdet3d's ``[x_min, y_min, z_min, x_max, y_max, z_max]``."""
        pcr = point_cloud_range
        return cls((pcr[0], pcr[3]), (pcr[1], pcr[4]), cell_size)

    @property
    def nx(self) -> int:
        return int(round((self.x_range[1] - self.x_range[0]) /
                         self.cell_size[0]))

    @property
    def ny(self) -> int:
        return int(round((self.y_range[1] - self.y_range[0]) /
                         self.cell_size[1]))

    @property
    def shape(self) -> Tuple[int, int]:
        """(Y, X): the spatial shape of a BEV tensor on this grid."""
        return (self.ny, self.nx)

    def cell_index(self, x: ArrayLike, y: ArrayLike):
        """Metric (x, y) -> integer (iy, ix); out-of-grid cells are not
        clipped, callers test ``0 <= i < n``."""
        lib = torch if isinstance(x, torch.Tensor) else np
        ix = lib.floor((x - self.x_range[0]) / self.cell_size[0])
        iy = lib.floor((y - self.y_range[0]) / self.cell_size[1])
        if lib is torch:
            return iy.long(), ix.long()
        return iy.astype(np.int64), ix.astype(np.int64)

    def cell_centers(self) -> Tuple[np.ndarray, np.ndarray]:
        """(ys, xs): 1D arrays of cell-centre coordinates along each axis."""
        xs = self.x_range[0] + (np.arange(self.nx) + 0.5) * self.cell_size[0]
        ys = self.y_range[0] + (np.arange(self.ny) + 0.5) * self.cell_size[1]
        return ys, xs
