"""The model's geometry, declared once: every grid and size the modules and
the data pipeline use is read from (or derived by) one ``BEVGeometry``.

Frame: the (augmented) LiDAR frame of ``fuller.structures.frames``; grids are
``BEVGrid``s laid out (Y, X), row 0 at the smallest y.

Declared (config ``geometry = dict(...)``):

- ``point_cloud_range`` [x0, y0, z0, x1, y1, z1] (m): LiDAR voxel grid extent,
  the range filter of the pipeline and the extent of every BEV grid.
- ``voxel_size`` [dx, dy, dz] (m).
- ``lidar_stride``: the sparse encoder's downsampling in x and y; the shared
  BEV map has cells of ``voxel_size[:2] * lidar_stride``.
- ``image_size`` [H, W]: network input images (the pipeline's final size).
- ``image_stride``: stride of the image features the view transform lifts.
- ``lss_upsample``: the view transform pools at a ``lss_upsample`` times finer
  grid than the shared map and downsamples back (BEVFusion pools 0.3 m cells
  for a 0.6 m map: 2).
- ``map_grid`` dict(x_range, y_range, cell_size): the map-segmentation grid
  (default: the published 100 m x 100 m, 0.5 m grid, ``MAP_GRID``).

Derived (``as_dict()``; a config states them where modules use them, and
``fuller.utils.config_utils.check_config_consistency`` compares):
``sparse_shape`` (Z + 1, Y, X) in mmdet3d's convention, ``grid_size``
(X, Y, Z) (CenterHead's), ``bev_grid`` (the shared map's grid as a dict),
``feature_size``, ``xbound`` / ``ybound`` (view-transform pooling grid),
``map_x_range`` / ``map_y_range`` / ``map_cell_size``.
"""
from dataclasses import dataclass, field
from typing import Dict, Sequence, Tuple

from .frames import BEVGrid
from .nuscenes_world import MAP_GRID

_WHERE = 'fuller/structures/geometry.py'


def _grid_dict(grid: BEVGrid) -> dict:
    return dict(x_range=list(grid.x_range), y_range=list(grid.y_range),
                cell_size=list(grid.cell_size))


def as_bev_grid(grid) -> BEVGrid:
    """A ``BEVGrid`` from ``grid``, a ``BEVGrid`` or its keyword dict
    ``dict(x_range, y_range, cell_size)``."""
    if isinstance(grid, BEVGrid):
        return grid
    if isinstance(grid, str):
        raise TypeError(f'{_WHERE}: got the string {grid!r} for a BEV grid; '
                        'configs hold the grid itself, dict(x_range, y_range, '
                        'cell_size) (fuller.utils.config_utils.'
                        'check_config_consistency names such strings)')
    keys = {'x_range', 'y_range', 'cell_size'}
    if not isinstance(grid, dict) or set(grid) != keys:
        raise ValueError(f'{_WHERE}: a BEV grid is a BEVGrid or a dict with '
                         f'exactly {sorted(keys)}, got {grid!r}')
    return BEVGrid(grid['x_range'], grid['y_range'], grid['cell_size'])


@dataclass(frozen=True)
class BEVGeometry:
    """See the module docstring. Raises ValueError naming the field when the
    declared numbers do not make whole grids."""
    point_cloud_range: Sequence[float]
    voxel_size: Sequence[float]
    lidar_stride: int
    image_size: Sequence[int]
    image_stride: int
    lss_upsample: int = 1
    map_grid: dict = field(default_factory=lambda: _grid_dict(MAP_GRID))

    def __post_init__(self):
        pcr, voxel = list(map(float, self.point_cloud_range)), list(map(float, self.voxel_size))
        if len(pcr) != 6 or len(voxel) != 3:
            raise ValueError(f'{_WHERE}: point_cloud_range needs 6 numbers and voxel_size 3, '
                             f'got {self.point_cloud_range} and {self.voxel_size}')
        object.__setattr__(self, 'point_cloud_range', pcr)
        object.__setattr__(self, 'voxel_size', voxel)
        object.__setattr__(self, 'image_size', [int(v) for v in self.image_size])
        object.__setattr__(self, 'map_grid', _grid_dict(as_bev_grid(self.map_grid)))
        for name in ('lidar_stride', 'image_stride', 'lss_upsample'):
            if int(getattr(self, name)) < 1:
                raise ValueError(f'{_WHERE}: {name} must be >= 1, got {getattr(self, name)}')
        self.voxel_grid  # noqa: B018  (validates: whole voxels)
        ny, nx = self.voxel_grid.shape
        if nx % self.lidar_stride or ny % self.lidar_stride:
            raise ValueError(f'{_WHERE}: lidar_stride {self.lidar_stride} does not divide '
                             f'the voxel grid (Y, X) = {(ny, nx)}')
        nz = (pcr[5] - pcr[2]) / voxel[2]
        if pcr[5] <= pcr[2] or abs(nz - round(nz)) > 1e-6:
            raise ValueError(f'{_WHERE}: z range {pcr[2::3]} is not a whole number of '
                             f'{voxel[2]} m voxels')
        h, w = self.image_size
        if h % self.image_stride or w % self.image_stride:
            raise ValueError(f'{_WHERE}: image_stride {self.image_stride} does not divide '
                             f'image_size {self.image_size}')

    @property
    def voxel_grid(self) -> BEVGrid:
        return BEVGrid.from_point_cloud_range(self.point_cloud_range, self.voxel_size[:2])

    @property
    def bev_grid(self) -> BEVGrid:
        """The grid of the LiDAR BEV map, the fused map and the heads' input."""
        s = self.lidar_stride
        return BEVGrid.from_point_cloud_range(
            self.point_cloud_range, (self.voxel_size[0] * s, self.voxel_size[1] * s))

    @property
    def sparse_shape(self) -> Tuple[int, int, int]:
        """(Z + 1, Y, X): mmdet3d's SparseEncoder adds one z cell."""
        pcr, voxel = self.point_cloud_range, self.voxel_size
        nz = round((pcr[5] - pcr[2]) / voxel[2])
        ny, nx = self.voxel_grid.shape
        return (nz + 1, ny, nx)

    def as_dict(self) -> Dict[str, object]:
        """Declared and derived values as plain lists and numbers."""
        bev, cell = self.bev_grid, self.bev_grid.cell_size
        fine = (cell[0] / self.lss_upsample, cell[1] / self.lss_upsample)
        nz, ny, nx = self.sparse_shape
        h, w = self.image_size
        return dict(
            point_cloud_range=list(self.point_cloud_range),
            voxel_size=list(self.voxel_size),
            lidar_stride=int(self.lidar_stride),
            image_size=[h, w],
            image_stride=int(self.image_stride),
            lss_upsample=int(self.lss_upsample),
            map_grid=dict(self.map_grid),
            map_x_range=list(self.map_grid['x_range']),
            map_y_range=list(self.map_grid['y_range']),
            map_cell_size=list(self.map_grid['cell_size']),
            sparse_shape=[nz, ny, nx],
            grid_size=[nx, ny, nz - 1],
            bev_grid=_grid_dict(bev),
            bev_cell=list(cell),
            feature_size=[h // self.image_stride, w // self.image_stride],
            xbound=[bev.x_range[0], bev.x_range[1], fine[0]],
            ybound=[bev.y_range[0], bev.y_range[1], fine[1]],
        )
