"""Loading transforms: LiDAR points (+ sweeps), six camera images, map masks.

Shape shorthand: P points, F point features, N cameras, H/W image pixels,
C map classes, Y/X BEV rows/columns.

Frames: points are returned in the keyframe ``lidar`` frame. A sweep's
``lidar_points.lidar2sensor`` (mmdet3d v2 infos, and fuller's) maps
keyframe-LiDAR to sweep-LiDAR coordinates (column vectors), so sweep points
are moved with its inverse. (mmdet3d's ``LoadPointsFromMultiSweeps``
applies ``p @ R - t`` with that matrix, which is only right for R = I;
hence a loader of our own.)
Map masks are cached in the keyframe ``lidar`` frame on a ``BEVGrid``.

Every file is checked: a missing, truncated or undecodable file raises an
error that names it.
"""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet3d.registry import TRANSFORMS
from mmdet3d.structures.points import LiDARPoints
from mmengine import fileio

from fuller.datasets.map_mask_io import (MAP_CLASSES, MapMaskFileError,
                                         load_map_masks)
from fuller.datasets.transforms.image_aug import resize_affine
from fuller.structures.frames import BEVGrid
from fuller.structures.nuscenes_world import CAMERAS, MAP_GRID


def _get_bytes(path: str,
               what: str,
               backend_args: Optional[dict] = None) -> bytes:
    """Read a file through mmengine's file backends; errors name it."""
    try:
        return fileio.get(path, backend_args=backend_args)
    except FileNotFoundError as err:
        raise FileNotFoundError(f'{what} file not found: {path}') from err
    except IsADirectoryError as err:
        raise FileNotFoundError(f'{what} path is a directory: {path}') from err


def load_points(path: str,
                num_feats: int = 5,
                backend_args: Optional[dict] = None,
                allow_empty: bool = False) -> np.ndarray:
    """Read a float32 ``.bin`` point file as a (P, num_feats) array.

    Args:
        path: the point file (nuScenes ``.pcd.bin``: x, y, z, intensity,
            ring index per point, so ``num_feats`` 5).
        num_feats: float32 values per point.
        backend_args: mmengine file backend arguments (None: local files).
        allow_empty: return a (0, num_feats) array for a file with no points
            instead of raising.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: its size is not a whole number of ``num_feats`` float32
            records (truncated or wrong ``num_feats``), it holds no points
            (unless ``allow_empty``) or non-finite values.
    """
    buf = _get_bytes(path, 'LiDAR point', backend_args)
    record = 4 * num_feats
    if len(buf) % record != 0:
        raise ValueError(
            f'LiDAR point file {path} has {len(buf)} bytes, not a multiple '
            f'of {record} ({num_feats} float32 per point): truncated or '
            f'wrong load_dim')
    points = np.frombuffer(buf, dtype=np.float32).reshape(-1, num_feats)
    if len(points) == 0 and not allow_empty:
        raise ValueError(f'LiDAR point file {path} holds no points')
    if not np.isfinite(points).all():
        raise ValueError(f'LiDAR point file {path} holds NaN/inf values')
    return points.copy()


def _remove_close(points: np.ndarray, radius: float) -> np.ndarray:
    """Drop points with |x| < radius and |y| < radius (the ego car)."""
    close = (np.abs(points[:, 0]) < radius) & (np.abs(points[:, 1]) < radius)
    return points[~close]


@TRANSFORMS.register_module()
class LoadNuScenesPoints(BaseTransform):
    """Keyframe LiDAR points plus up to ``sweeps_num`` earlier sweeps.

    Output columns before ``use_dim``: x, y, z, intensity, time_lag (s;
    keyframe 0, a sweep ``keyframe timestamp - sweep timestamp``), all in the
    keyframe LiDAR frame. The stored 5th column (ring index) is dropped.

    Required keys: ``lidar_points.lidar_path`` (or ``lidar_path``),
    ``timestamp``; ``lidar_sweeps`` when ``sweeps_num > 0`` (missing or
    short lists are allowed: the first keyframe of a scene has none).
    Added keys: ``points`` (LiDARPoints).

    Args:
        sweeps_num: number of sweeps to add (0 = keyframe only).
        load_dim: float32 values per point in the files.
        use_dim: output columns to keep, indices into the 5 listed above.
        remove_close_radius: sweep points within this box around the sweep
            sensor are dropped (the ego vehicle); 0 disables.
        test_mode: use the newest sweeps instead of a random subset.
        backend_args: mmengine file backend arguments.
    """

    def __init__(self,
                 sweeps_num: int = 0,
                 load_dim: int = 5,
                 use_dim: Sequence[int] = (0, 1, 2, 3, 4),
                 remove_close_radius: float = 1.0,
                 test_mode: bool = False,
                 backend_args: Optional[dict] = None) -> None:
        if load_dim < 4:
            raise ValueError(f'load_dim must be >= 4 (x, y, z, intensity), '
                             f'got {load_dim}')
        if not use_dim or min(use_dim) < 0 or max(use_dim) > 4:
            raise ValueError(f'use_dim must index the 5 output columns '
                             f'(x, y, z, intensity, time_lag), got {use_dim}')
        self.sweeps_num = int(sweeps_num)
        self.load_dim = int(load_dim)
        self.use_dim = list(use_dim)
        self.remove_close_radius = float(remove_close_radius)
        self.test_mode = bool(test_mode)
        self.backend_args = backend_args

    def _keyframe(self, results: dict) -> np.ndarray:
        path = results.get('lidar_path')
        if path is None:
            path = results['lidar_points']['lidar_path']
        raw = load_points(path, self.load_dim, self.backend_args)
        out = np.zeros((len(raw), 5), dtype=np.float32)
        out[:, :4] = raw[:, :4]
        return out

    def _choose_sweeps(self, sweeps: List[dict]) -> List[dict]:
        if len(sweeps) <= self.sweeps_num:
            return list(sweeps)
        if self.test_mode:
            return list(sweeps[:self.sweeps_num])
        idx = np.random.choice(len(sweeps), self.sweeps_num, replace=False)
        return [sweeps[i] for i in np.sort(idx)]

    def _sweep(self, sweep: dict, key_timestamp: float) -> np.ndarray:
        path = sweep['lidar_points']['lidar_path']
        raw = load_points(path,
                          self.load_dim,
                          self.backend_args,
                          allow_empty=True)
        if self.remove_close_radius > 0:
            raw = _remove_close(raw, self.remove_close_radius)
        key2sweep = np.asarray(sweep['lidar_points']['lidar2sensor'],
                               dtype=np.float64)
        if key2sweep.shape != (4, 4):
            raise ValueError(f'sweep {path}: lidar2sensor must be 4x4, got '
                             f'{key2sweep.shape}')
        sweep2key = np.linalg.inv(key2sweep)
        out = np.empty((len(raw), 5), dtype=np.float32)
        out[:, :3] = raw[:, :3] @ sweep2key[:3, :3].T + sweep2key[:3, 3]
        out[:, 3] = raw[:, 3]
        out[:, 4] = key_timestamp - float(sweep['timestamp'])
        return out

    def transform(self, results: dict) -> dict:
        parts = [self._keyframe(results)]
        if self.sweeps_num > 0:
            sweeps = self._choose_sweeps(results.get('lidar_sweeps') or [])
            parts += [
                self._sweep(s, float(results['timestamp'])) for s in sweeps
            ]
        points = np.concatenate(parts, axis=0)[:, self.use_dim]
        results['points'] = LiDARPoints(points,
                                        points_dim=points.shape[-1],
                                        attribute_dims=None)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(sweeps_num={self.sweeps_num}, '
                f'load_dim={self.load_dim}, use_dim={self.use_dim}, '
                f'remove_close_radius={self.remove_close_radius}, '
                f'test_mode={self.test_mode})')


def _check_jpeg_complete(buf: bytes, path: str) -> None:
    """A JPEG must end with the EOI marker; OpenCV decodes truncated files
    silently (grey bottom rows), so check it here."""
    if buf[:2] == b'\xff\xd8' and buf.rstrip(b'\x00')[-2:] != b'\xff\xd9':
        raise ValueError(f'Image file {path} is a truncated JPEG (no end '
                         f'marker)')


def load_image(path: str,
               color_type: str = 'color',
               backend_args: Optional[dict] = None) -> np.ndarray:
    """Decode one image (H, W, 3) uint8 BGR; missing/corrupt -> error.

    Args:
        path: the image file.
        color_type: ``mmcv.imfrombytes`` flag (``'color'``: 3 channels).
        backend_args: mmengine file backend arguments (None: local files).
    """
    buf = _get_bytes(path, 'Image', backend_args)
    _check_jpeg_complete(buf, path)
    img = mmcv.imfrombytes(buf, flag=color_type, backend='cv2')
    if img is None or img.size == 0:
        raise ValueError(f'Image file {path} cannot be decoded (corrupt or '
                         f'not an image)')
    return img


@TRANSFORMS.register_module()
class LoadMultiViewImages(BaseTransform):
    """Load the N camera images of a sample, in ``results['cam_names']``
    order (``NuScenesMultiTaskDataset`` sets it; default: the six nuScenes
    cameras in ``CAMERAS`` order).

    With ``scale`` the images are resized by that factor right after
    decoding (cheaper augmentation later); ``cam2img`` is left untouched and
    the resize goes into ``img_aug_matrix`` (N, 4, 4), like any other image
    augmentation (see ``image_aug.py`` for the matrix convention).

    Required keys: ``images`` (per-camera dicts with ``img_path``).
    Added keys: ``img`` (list of N (H, W, 3) arrays), ``img_path``,
    ``img_shape``, ``ori_shape``, ``pad_shape``, ``num_views``,
    ``img_aug_matrix``.

    Args:
        to_float32: convert the images to float32.
        color_type: ``mmcv.imfrombytes`` flag.
        scale: resize factor applied at load time, or None.
        backend_args: mmengine file backend arguments.
    """

    def __init__(self,
                 to_float32: bool = False,
                 color_type: str = 'color',
                 scale: Optional[float] = None,
                 backend_args: Optional[dict] = None) -> None:
        if scale is not None and scale <= 0:
            raise ValueError(f'scale must be > 0, got {scale}')
        self.to_float32 = bool(to_float32)
        self.color_type = color_type
        self.scale = None if scale is None else float(scale)
        self.backend_args = backend_args

    def _paths(self, results: dict) -> List[str]:
        cam_names = results.get('cam_names') or CAMERAS
        images: Dict[str, dict] = results.get('images', {})
        missing = [c for c in cam_names if 'img_path' not in images.get(c, {})]
        if missing:
            raise KeyError(f'sample {results.get("token", "?")}: no image '
                           f'entry for cameras {missing}')
        return [images[c]['img_path'] for c in cam_names]

    def _rescale(self, img: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        src_hw = img.shape[:2]
        dst_hw = (max(1, int(round(src_hw[0] * self.scale))),
                  max(1, int(round(src_hw[1] * self.scale))))
        out = mmcv.imresize(
            img, (dst_hw[1], dst_hw[0]),
            interpolation='area' if self.scale < 1 else 'bilinear')
        mat = np.eye(4)
        affine = resize_affine(src_hw, dst_hw)
        mat[:2, :2], mat[:2, 3] = affine[:, :2], affine[:, 2]
        return out, mat

    def transform(self, results: dict) -> dict:
        paths = self._paths(results)
        imgs, mats = [], []
        for path in paths:
            img = load_image(path, self.color_type, self.backend_args)
            mat = np.eye(4)
            if self.scale is not None and self.scale != 1.0:
                img, mat = self._rescale(img)
            if self.to_float32:
                img = img.astype(np.float32)
            imgs.append(img)
            mats.append(mat)
        shapes = {p: im.shape for p, im in zip(paths, imgs)}
        if len(set(shapes.values())) != 1:
            raise ValueError(f'camera images of one sample differ in size: '
                             f'{shapes}')
        results['img'] = imgs
        results['img_path'] = paths
        results['img_shape'] = imgs[0].shape[:2]
        results['ori_shape'] = imgs[0].shape[:2]
        results['pad_shape'] = imgs[0].shape[:2]
        results['num_views'] = len(imgs)
        results['img_aug_matrix'] = np.stack(mats)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(to_float32={self.to_float32}, '
                f'color_type={self.color_type!r}, scale={self.scale})')


@TRANSFORMS.register_module()
class LoadBEVMapMasks(BaseTransform):
    """Read the cached (C, Y, X) map masks of a sample (no devkit needed).

    Required keys: ``map_mask_path`` (resolved by the dataset).
    Added keys: ``gt_masks_bev`` (C, Y, X) bool in the keyframe LiDAR frame,
    ``bev_mask_grid`` (BEVGrid, used by the BEV augmentations),
    ``map_classes``.

    Args:
        x_range, y_range, cell_size: the grid (metres, LiDAR frame); by
            default ``MAP_GRID``, the grid of BEVFusion's map labels.
        classes: map classes to return, in this order (names stored in the
            cache; a subset is fine).
    """

    def __init__(self,
                 x_range: Sequence[float] = MAP_GRID.x_range,
                 y_range: Sequence[float] = MAP_GRID.y_range,
                 cell_size: Union[float, Sequence[float]] = MAP_GRID.cell_size,
                 classes: Sequence[str] = MAP_CLASSES) -> None:
        self.grid = BEVGrid(tuple(x_range), tuple(y_range), cell_size)
        self.classes = tuple(classes)

    def transform(self, results: dict) -> dict:
        path = results.get('map_mask_path')
        if path is None:
            raise KeyError(
                f'sample {results.get("token", "?")} has no map_mask_path: '
                f'build the dataset with with_map=True from infos made by '
                f'`python tools/create_data.py nuscenes ...`, and leave '
                f'LoadBEVMapMasks out of test-split pipelines')
        masks = load_map_masks(path, self.classes)
        if masks.shape[1:] != self.grid.shape:
            raise MapMaskFileError(
                f'Map-mask cache file {path} has grid (Y, X) = '
                f'{masks.shape[1:]}, but LoadBEVMapMasks expects '
                f'{self.grid.shape} for x {self.grid.x_range}, y '
                f'{self.grid.y_range}, cell {self.grid.cell_size}; '
                f'regenerate the cache with `python tools/create_data.py '
                f'nuscenes ...` or fix the config')
        results['gt_masks_bev'] = masks
        results['bev_mask_grid'] = self.grid
        results['map_classes'] = self.classes
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(grid={self.grid}, '
                f'classes={self.classes})')
