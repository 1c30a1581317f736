"""Global BEV augmentation of points, boxes and map masks together.

Shape shorthand: P points, M boxes, C map classes, Y/X BEV rows/columns.

Frames: ``lidar`` is the keyframe LiDAR frame of the sample as stored;
``aug_lidar`` is the frame after the BEV augmentations of the pipeline.
``lidar_aug_matrix`` (4, 4) maps column vectors ``lidar -> aug_lidar``; each
transform here composes its own step on the left of it.

Map masks (``gt_masks_bev`` (C, Y, X) bool) live on a fixed grid
(``results['bev_mask_grid']``, a ``BEVGrid``, set by ``LoadBEVMapMasks``)
in the current frame. After a step ``old2new``, each cell centre of the grid
is mapped back by ``inv(old2new)`` and takes the value of the nearest old
cell; centres that land outside the grid become False.
"""
from typing import Optional, Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmdet3d.registry import TRANSFORMS

from fuller.structures.frames import BEVGrid


def warp_bev_masks(masks: np.ndarray, grid: BEVGrid,
                   old2new: np.ndarray) -> np.ndarray:
    """Resample (C, Y, X) masks after the frame change ``old2new`` (4x4).

    Nearest-neighbour lookup of every new cell centre in the old grid,
    vectorised over all cells and classes; outside the grid -> False.
    Only the x/y part of the transform is used (masks are BEV).
    """
    if masks.shape[-2:] != grid.shape:
        raise ValueError(f'gt_masks_bev spatial shape {masks.shape[-2:]} '
                         f'does not match its grid {grid.shape} (Y, X)')
    new2old = np.linalg.inv(np.asarray(old2new, dtype=np.float64))
    ys, xs = grid.cell_centers()
    yy, xx = np.meshgrid(ys, xs, indexing='ij')  # (Y, X) each
    x_old = new2old[0, 0] * xx + new2old[0, 1] * yy + new2old[0, 3]
    y_old = new2old[1, 0] * xx + new2old[1, 1] * yy + new2old[1, 3]
    iy, ix = grid.cell_index(x_old, y_old)
    inside = (iy >= 0) & (iy < grid.ny) & (ix >= 0) & (ix < grid.nx)
    iy = np.where(inside, iy, 0)
    ix = np.where(inside, ix, 0)
    return masks[:, iy, ix] & inside[None]


def _apply_to_points(results: dict, old2new: np.ndarray) -> None:
    """Move ``results['points']`` (xyz columns) by ``old2new``."""
    if 'points' not in results:
        return
    points = results['points']
    mat = torch.as_tensor(old2new, dtype=points.tensor.dtype)
    xyz = points.tensor[:, :3]
    points.tensor[:, :3] = xyz @ mat[:3, :3].T + mat[:3, 3]


def _apply_to_masks(results: dict, old2new: np.ndarray) -> None:
    if 'gt_masks_bev' not in results:
        return
    if 'bev_mask_grid' not in results:
        raise KeyError('gt_masks_bev needs results["bev_mask_grid"] '
                       '(set by LoadBEVMapMasks) to be augmented')
    results['gt_masks_bev'] = warp_bev_masks(results['gt_masks_bev'],
                                             results['bev_mask_grid'], old2new)


def _compose_aug_matrix(results: dict, old2new: np.ndarray) -> None:
    prev = results.get('lidar_aug_matrix')
    prev = np.eye(4) if prev is None else np.asarray(prev, np.float64)
    results['lidar_aug_matrix'] = old2new @ prev


@TRANSFORMS.register_module()
class BEVGlobalRotScaleTrans(BaseTransform):
    """Rotate about z, scale, then translate the whole scene.

    ``aug = T(t) @ S(s) @ Rz(theta)``, with ``theta ~ U(rot_range)`` (rad,
    counter-clockwise seen from above), ``s ~ U(scale_ratio_range)`` and
    ``t ~ N(0, translation_std)`` per axis. Points, ``gt_bboxes_3d``
    (centres, sizes, yaw and velocities) and ``gt_masks_bev`` move
    together; ``lidar_aug_matrix`` is updated.

    For test pipelines leave the transform out (or use zero ranges).

    Args:
        rot_range: (min, max) rotation angle in radians.
        scale_ratio_range: (min, max) scale factor.
        translation_std: std of the translation in metres, per axis (x, y,
            z).
    """

    def __init__(
        self,
        rot_range: Sequence[float] = (-0.78539816, 0.78539816),
        scale_ratio_range: Sequence[float] = (0.95, 1.05),
        translation_std: Sequence[float] = (0.0, 0.0, 0.0)
    ) -> None:
        if len(rot_range) != 2 or rot_range[0] > rot_range[1]:
            raise ValueError(f'rot_range must be (min, max), got {rot_range}')
        if (len(scale_ratio_range) != 2 or scale_ratio_range[0] <= 0
                or scale_ratio_range[0] > scale_ratio_range[1]):
            raise ValueError('scale_ratio_range must be (min, max) > 0, got '
                             f'{scale_ratio_range}')
        if len(translation_std) != 3 or min(translation_std) < 0:
            raise ValueError('translation_std must be 3 values >= 0, got '
                             f'{translation_std}')
        self.rot_range = tuple(float(v) for v in rot_range)
        self.scale_ratio_range = tuple(float(v) for v in scale_ratio_range)
        self.translation_std = tuple(float(v) for v in translation_std)

    @staticmethod
    def matrix(angle: float, scale: float,
               translation: Sequence[float]) -> np.ndarray:
        """The 4x4 ``lidar -> aug_lidar`` step T @ S @ Rz."""
        c, s = np.cos(angle), np.sin(angle)
        mat = np.eye(4)
        mat[:2, :2] = [[c, -s], [s, c]]
        mat[:3, :3] *= scale
        mat[:3, 3] = translation
        return mat

    def apply(self, results: dict, angle: float, scale: float,
              translation: np.ndarray) -> dict:
        """Apply given parameters (used by ``transform`` and by tests)."""
        old2new = self.matrix(angle, scale, translation)
        _apply_to_points(results, old2new)
        boxes = results.get('gt_bboxes_3d')
        if boxes is not None and len(boxes) > 0:
            boxes.rotate(np.float32(angle))
            boxes.scale(float(scale))
            boxes.translate(np.asarray(translation, dtype=np.float32))
        _apply_to_masks(results, old2new)
        _compose_aug_matrix(results, old2new)
        # mmdet3d's bookkeeping keys, for tools that read them.
        results['pcd_rotation_angle'] = float(angle)
        results['pcd_rotation'] = torch.as_tensor(old2new[:3, :3] / scale,
                                                  dtype=torch.float32).T
        results['pcd_scale_factor'] = float(scale)
        results['pcd_trans'] = np.asarray(translation, dtype=np.float64)
        results.setdefault('transformation_3d_flow',
                           []).extend(['R', 'S', 'T'])
        return results

    def transform(self, results: dict) -> dict:
        angle = np.random.uniform(*self.rot_range)
        scale = np.random.uniform(*self.scale_ratio_range)
        translation = np.random.normal(scale=self.translation_std, size=3)
        return self.apply(results, angle, scale, translation)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(rot_range={self.rot_range}, '
                f'scale_ratio_range={self.scale_ratio_range}, '
                f'translation_std={self.translation_std})')


@TRANSFORMS.register_module()
class BEVRandomFlip3D(BaseTransform):
    """Random BEV flips of points, boxes and map masks.

    mmdet3d's naming: a ``horizontal`` flip negates y (mirror about the x
    axis), a ``vertical`` flip negates x. Both may apply (horizontal
    first). ``lidar_aug_matrix`` is updated.

    Args:
        flip_ratio_bev_horizontal: probability of the y flip.
        flip_ratio_bev_vertical: probability of the x flip.
    """

    def __init__(self,
                 flip_ratio_bev_horizontal: float = 0.0,
                 flip_ratio_bev_vertical: float = 0.0) -> None:
        for name, p in (('flip_ratio_bev_horizontal',
                         flip_ratio_bev_horizontal),
                        ('flip_ratio_bev_vertical', flip_ratio_bev_vertical)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f'{name} must be in [0, 1], got {p}')
        self.flip_ratio_bev_horizontal = float(flip_ratio_bev_horizontal)
        self.flip_ratio_bev_vertical = float(flip_ratio_bev_vertical)

    @staticmethod
    def matrix(direction: str) -> np.ndarray:
        """The 4x4 step of a flip (``horizontal``: y -> -y)."""
        axis = {'horizontal': 1, 'vertical': 0}[direction]
        mat = np.eye(4)
        mat[axis, axis] = -1.0
        return mat

    def apply(self, results: dict, horizontal: bool, vertical: bool) -> dict:
        """Apply the given flips (used by ``transform`` and by tests)."""
        for direction, do in (('horizontal', horizontal), ('vertical',
                                                           vertical)):
            if not do:
                continue
            old2new = self.matrix(direction)
            _apply_to_points(results, old2new)
            boxes: Optional[object] = results.get('gt_bboxes_3d')
            if boxes is not None and len(boxes) > 0:
                boxes.flip(direction)
            _apply_to_masks(results, old2new)
            _compose_aug_matrix(results, old2new)
            results.setdefault(
                'transformation_3d_flow',
                []).append('HF' if direction == 'horizontal' else 'VF')
        results['pcd_horizontal_flip'] = bool(horizontal)
        results['pcd_vertical_flip'] = bool(vertical)
        results.setdefault('lidar_aug_matrix', np.eye(4))
        return results

    def transform(self, results: dict) -> dict:
        horizontal = bool(np.random.rand() < self.flip_ratio_bev_horizontal)
        vertical = bool(np.random.rand() < self.flip_ratio_bev_vertical)
        return self.apply(results, horizontal, vertical)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(flip_ratio_bev_horizontal='
                f'{self.flip_ratio_bev_horizontal}, flip_ratio_bev_vertical='
                f'{self.flip_ratio_bev_vertical})')
