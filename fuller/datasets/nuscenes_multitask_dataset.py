"""nuScenes for joint 3D detection and BEV map segmentation.

Shape shorthand: N cameras.

Frames (see ``fuller.structures.frames``): per camera ``cam2img`` (padded
to 4x4), ``lidar2cam``, ``lidar2img = cam2img @ lidar2cam`` and ``cam2ego``;
per sample ``lidar2ego`` and ``ego2global``. All are homogeneous ``a2b``
matrices acting on column vectors, stacked (N, 4, 4) in ``cam_names``
order.
"""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from mmdet3d.datasets import NuScenesDataset
from mmdet3d.registry import DATASETS

from fuller.datasets.map_mask_io import MAP_CLASSES
from fuller.datasets.transforms.loading import CAMERAS

REGENERATE_HINT = (
    'regenerate the info files with `python tools/create_data.py '
    'nuscenes --root-path <dataroot> --version <version>`')
_CAMERA_KEYS = ('img_path', 'cam2img', 'lidar2cam', 'cam2ego')
_INSTANCE_KEYS = ('bbox_3d', 'bbox_label_3d', 'num_lidar_pts')


class InfoSchemaError(KeyError):
    """An info entry lacks a field the configured dataset needs."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


DATAROOT_HINT = (
    'create the infos with `python tools/create_data.py nuscenes '
    '--root-path <dataroot> --out-dir <dataroot> --version <version>` (for '
    'the generated dataset: `make demo`), and point the config at that '
    'folder (`--data-root` of tools/train.py and tools/test.py, or '
    '`data_root` in the config)')


def check_matrix(value, shapes: Sequence[tuple], key: str,
                 where: str) -> np.ndarray:
    """``value`` as a float64 array whose shape is one of ``shapes``;
    otherwise a ValueError naming ``key`` and ``where`` (file, sample)."""
    mat = np.asarray(value, dtype=np.float64)
    if mat.shape not in shapes:
        raise ValueError(
            f'{where}: {key} has shape {mat.shape}, expected '
            f'{" or ".join(str(s) for s in shapes)}; {REGENERATE_HINT}')
    if not np.isfinite(mat).all():
        raise ValueError(f'{where}: {key} holds NaN/inf values; '
                         f'{REGENERATE_HINT}')
    return mat


def pad_intrinsics(cam2img: Sequence[Sequence[float]]) -> np.ndarray:
    """A 3x3 (or 3x4/4x4) intrinsic matrix padded into a 4x4 identity."""
    mat = np.asarray(cam2img, dtype=np.float64)
    out = np.eye(4)
    out[:mat.shape[0], :mat.shape[1]] = mat
    return out


def stack_camera_matrices(images: Dict[str, dict],
                          cam_names: Sequence[str]) -> Dict[str, np.ndarray]:
    """(N, 4, 4) ``cam2img``, ``lidar2cam``, ``lidar2img``, ``cam2ego``."""
    cam2img = np.stack(
        [pad_intrinsics(images[c]['cam2img']) for c in cam_names])
    lidar2cam = np.stack(
        [np.asarray(images[c]['lidar2cam'], np.float64) for c in cam_names])
    cam2ego = np.stack(
        [np.asarray(images[c]['cam2ego'], np.float64) for c in cam_names])
    return dict(cam2img=cam2img,
                lidar2cam=lidar2cam,
                lidar2img=cam2img @ lidar2cam,
                cam2ego=cam2ego)


@DATASETS.register_module()
class NuScenesMultiTaskDataset(NuScenesDataset):
    """mmdet3d's ``NuScenesDataset`` plus cameras, map masks and a schema
    check.

    Each parsed info additionally holds ``cam_names``, the stacked camera
    matrices of :func:`stack_camera_matrices` (camera on), ``lidar2ego``,
    ``ego2global`` (4x4 arrays), ``token``, ``location`` and the resolved
    ``map_mask_path`` (map task on). GT boxes keep mmdet3d's handling: the
    info's ``bbox_3d`` has its z at the box centre and becomes a bottom-centre
    ``LiDARInstance3DBoxes`` with velocity (box_dim 9).

    Test-split mode (``test_mode=True, load_eval_anns=False``) needs no
    ``instances`` and no map fields.

    Args:
        data_root, ann_file, pipeline, box_type_3d, test_mode,
            load_eval_anns, use_valid_flag, with_velocity, metainfo,
            backend_args: as in mmdet3d's ``NuScenesDataset``.
        data_prefix: folders joined with the info's file names: ``pts``,
            ``sweeps``, ``img`` or one per camera (``CAM_FRONT``...), and
            ``map_mask_root``: the folder the info's ``map_mask_path`` is
            relative to, i.e. the ``create_data`` output folder (default
            ``''``: ``data_root``).
        modality: ``dict(use_camera=..., use_lidar=...)``.
        with_det: parse detection ground truth. When False ``instances``
            may be absent and ``filter_empty_gt`` is ignored.
        with_map: require ``map_mask_path`` and ``location`` in the infos.
        cam_names: cameras to use, in this order.
        filter_empty_gt: drop training samples without boxes (only with
            ``with_det``).
        lazy_init, indices, serialize_data, max_refetch: as in mmengine's
            ``BaseDataset``.
    """
    METAINFO = dict(NuScenesDataset.METAINFO, map_classes=MAP_CLASSES)
    DEFAULT_PREFIX = dict(pts='samples/LIDAR_TOP',
                          img='',
                          sweeps='sweeps/LIDAR_TOP',
                          map_mask_root='')

    def __init__(self,
                 data_root: str,
                 ann_file: str,
                 pipeline: Optional[List[dict]] = None,
                 data_prefix: Optional[dict] = None,
                 modality: Optional[dict] = None,
                 with_det: bool = True,
                 with_map: bool = True,
                 cam_names: Sequence[str] = CAMERAS,
                 box_type_3d: str = 'LiDAR',
                 filter_empty_gt: bool = True,
                 test_mode: bool = False,
                 load_eval_anns: bool = True,
                 with_velocity: bool = True,
                 use_valid_flag: bool = False,
                 metainfo: Optional[dict] = None,
                 backend_args: Optional[dict] = None,
                 lazy_init: bool = False,
                 indices: Optional[Union[int, Sequence[int]]] = None,
                 serialize_data: bool = True,
                 max_refetch: int = 1000) -> None:
        self._check_classes(metainfo)
        data_prefix = {**self.DEFAULT_PREFIX, **(data_prefix or {})}
        modality = {'use_camera': True, 'use_lidar': True, **(modality or {})}
        self.with_det = bool(with_det)
        self.with_map = bool(with_map)
        self.cam_names = tuple(cam_names)
        super().__init__(data_root=data_root,
                         ann_file=ann_file,
                         pipeline=pipeline or [],
                         box_type_3d=box_type_3d,
                         modality=modality,
                         filter_empty_gt=filter_empty_gt and with_det,
                         test_mode=test_mode,
                         with_velocity=with_velocity,
                         use_valid_flag=use_valid_flag,
                         metainfo=metainfo,
                         data_prefix=data_prefix,
                         load_eval_anns=load_eval_anns,
                         backend_args=backend_args,
                         lazy_init=lazy_init,
                         indices=indices,
                         serialize_data=serialize_data,
                         max_refetch=max_refetch)

    @classmethod
    def _check_classes(cls, metainfo: Optional[dict]) -> None:
        """Every configured class must be a nuScenes detection class
        (mmdet3d would fail with a bare ``list.index`` error)."""
        classes = (metainfo or {}).get('classes')
        if classes is None:
            return
        if isinstance(classes, str):
            classes = [classes]
        valid = list(cls.METAINFO['classes'])
        unknown = [c for c in classes if c not in valid]
        if unknown:
            raise ValueError(
                f'metainfo.classes of {cls.__name__} holds unknown class '
                f'name(s) {unknown}; valid names are {valid}')
        duplicates = sorted({c for c in classes if list(classes).count(c) > 1})
        if duplicates:
            raise ValueError(f'metainfo.classes of {cls.__name__} lists '
                             f'{duplicates} more than once')

    def load_data_list(self) -> List[dict]:
        """mmdet3d's loading, plus clear errors for a missing info file,
        an info file without samples, and a training set in which
        ``filter_empty_gt`` would drop every sample."""
        if self.backend_args is None and not osp.isfile(self.ann_file):
            where = (f'data_root {self.data_root} does not exist'
                     if self.data_root and not osp.isdir(self.data_root)
                     else f'data_root is {self.data_root!r}')
            raise FileNotFoundError(
                f'Info file {self.ann_file} not found ({where}); '
                f'{DATAROOT_HINT}')
        data_list = super().load_data_list()
        if not data_list:
            raise ValueError(
                f'Info file {self.ann_file} holds no samples (its split has '
                f'no scenes in the tables, or the wrong --version was '
                f'converted); {REGENERATE_HINT}')
        if self.filter_empty_gt and not self.test_mode and not any(
                (info['ann_info']['gt_labels_3d'] >= 0).any()
                for info in data_list):
            raise ValueError(
                f'Info file {self.ann_file}: none of its {len(data_list)} '
                f'samples has a box of the classes {self.metainfo["classes"]}'
                f', so filter_empty_gt=True would drop them all; set '
                f'filter_empty_gt=False to train on samples without boxes')
        return data_list

    @property
    def needs_annotations(self) -> bool:
        """False in test-split mode (no ground truth is read)."""
        return not self.test_mode or self.load_eval_anns

    def check_info_schema(self, info: dict) -> None:
        """Raise ``InfoSchemaError`` naming the info file and the fix when
        ``info`` lacks a field this configuration needs."""
        missing = [
            k for k in ('token', 'ego2global', 'lidar_points') if k not in info
        ]
        lidar_keys = ('lidar_path',
                      'lidar2ego') if self.modality['use_lidar'] else (
                          'lidar2ego', )
        missing += [
            f'lidar_points.{k}' for k in lidar_keys
            if k not in info.get('lidar_points', {})
        ]
        if self.modality['use_camera']:
            images = info.get('images')
            if not images:
                missing.append('images')
            else:
                missing += [
                    f'images.{c}.{k}' for c in self.cam_names
                    for k in _CAMERA_KEYS if k not in images.get(c, {})
                ]
        if self.needs_annotations and self.with_map:
            missing += [
                k for k in ('map_mask_path', 'location') if k not in info
            ]
        if self.needs_annotations and self.with_det:
            if 'instances' not in info:
                missing.append('instances')
            else:
                missing += sorted({
                    f'instances[].{k}'
                    for inst in info['instances']
                    for k in _INSTANCE_KEYS +
                    (('velocity', ) if self.with_velocity else ())
                    if k not in inst
                })
        if missing:
            raise InfoSchemaError(
                f'Info file {self.ann_file}: sample '
                f'{info.get("token", info.get("sample_idx", "?"))} lacks '
                f'{missing} (needed with modality={self.modality}, '
                f'with_det={self.with_det}, with_map={self.with_map}); the '
                f'file is from an older or different converter; '
                f'{REGENERATE_HINT}')

    def check_info_matrices(self, info: dict) -> None:
        """Raise a ValueError naming the info file, the sample and the key
        when a pose or calibration matrix has the wrong shape (a 3x3 where
        a 4x4 is expected) or non-finite values."""
        where = (f'Info file {self.ann_file}, sample '
                 f'{info.get("token", info.get("sample_idx", "?"))}')
        check_matrix(info['ego2global'], [(4, 4)], 'ego2global', where)
        check_matrix(info['lidar_points']['lidar2ego'], [(4, 4)],
                     'lidar_points.lidar2ego', where)
        if not self.modality['use_camera']:
            return
        for cam in self.cam_names:
            cam_info = info['images'][cam]
            check_matrix(cam_info['cam2img'], [(3, 3), (3, 4), (4, 4)],
                         f'images.{cam}.cam2img', where)
            for key in ('lidar2cam', 'cam2ego'):
                check_matrix(cam_info[key], [(4, 4)], f'images.{cam}.{key}',
                             where)

    def parse_data_info(self, info: dict) -> dict:
        """Check the schema, then add cameras, frames and map fields."""
        self.check_info_schema(info)
        if not self.with_det:
            info['instances'] = []
        self.check_info_matrices(info)
        info = super().parse_data_info(info)
        info['lidar2ego'] = np.asarray(info['lidar_points']['lidar2ego'],
                                       dtype=np.float64)
        info['ego2global'] = np.asarray(info['ego2global'], dtype=np.float64)
        if self.modality['use_camera']:
            info['cam_names'] = list(self.cam_names)
            info.update(stack_camera_matrices(info['images'], self.cam_names))
            info['img_path'] = [
                info['images'][c]['img_path'] for c in self.cam_names
            ]
        if 'map_mask_path' in info:
            info['map_mask_path'] = osp.join(self.data_prefix['map_mask_root'],
                                             info['map_mask_path'])
        info.setdefault('location', None)
        return info
