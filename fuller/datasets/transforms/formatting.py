"""Pack a pipeline's results into model inputs and a Det3DDataSample.

Shape shorthand: N cameras, H/W image pixels, P points, C map classes,
Y/X BEV rows/columns.

Output: ``inputs = dict(points=(P, F) float tensor, img=(N, 3, H, W)
tensor)`` and a ``Det3DDataSample`` with ``gt_instances_3d`` (mmdet3d's
packing), ``gt_masks_bev`` (C, Y, X) BoolTensor as a plain attribute, and
metainfo with the (N, 4, 4) float32 camera matrices ``cam2img``,
``lidar2cam``, ``lidar2img``, ``cam2ego``, ``img_aug_matrix`` and the (4, 4)
``lidar_aug_matrix`` (identity when no augmentation ran).
"""
from typing import Sequence

import numpy as np
import torch
from mmdet3d.datasets.transforms import Pack3DDetInputs
from mmdet3d.registry import TRANSFORMS

MASK_KEYS = ('gt_masks_bev', )
FLOAT32_MATRIX_KEYS = ('cam2img', 'lidar2cam', 'lidar2img', 'cam2ego',
                       'img_aug_matrix', 'lidar_aug_matrix')
DEFAULT_META_KEYS = ('img_path', 'ori_shape', 'img_shape', 'pad_shape',
                     'scale_factor', 'lidar_path', 'num_pts_feats',
                     'box_mode_3d', 'box_type_3d', 'sample_idx', 'token',
                     'timestamp', 'location', 'cam_names', 'num_views',
                     'cam2img', 'lidar2cam', 'lidar2img', 'cam2ego',
                     'lidar2ego', 'ego2global', 'img_aug_matrix',
                     'lidar_aug_matrix', 'pcd_horizontal_flip',
                     'pcd_vertical_flip', 'pcd_trans', 'pcd_scale_factor',
                     'pcd_rotation', 'pcd_rotation_angle',
                     'transformation_3d_flow', 'map_classes', 'map_mask_path')


@TRANSFORMS.register_module()
class PackMultiTaskInputs(Pack3DDetInputs):
    """``Pack3DDetInputs`` that also packs BEV map masks and fuller's
    camera/augmentation matrices.

    Args:
        keys: results keys to pack: inputs (``points``, ``img``), instance
            fields (``gt_bboxes_3d``, ``gt_labels_3d``...) and
            ``gt_masks_bev``.
        meta_keys: results keys copied into the metainfo.
    """

    def __init__(self,
                 keys: Sequence[str],
                 meta_keys: Sequence[str] = DEFAULT_META_KEYS) -> None:
        keys = tuple(keys)
        self.mask_keys = tuple(k for k in keys if k in MASK_KEYS)
        super().__init__(keys=tuple(k for k in keys if k not in MASK_KEYS),
                         meta_keys=tuple(meta_keys))

    @staticmethod
    def _normalise_matrices(results: dict) -> None:
        if 'img' in results and 'img_aug_matrix' not in results:
            num = len(results['img']) if isinstance(results['img'],
                                                    list) else 1
            results['img_aug_matrix'] = np.tile(np.eye(4), (num, 1, 1))
        results.setdefault('lidar_aug_matrix', np.eye(4))
        for key in FLOAT32_MATRIX_KEYS:
            if key in results:
                results[key] = np.asarray(results[key], dtype=np.float32)

    def pack_single_results(self, results: dict) -> dict:
        self._normalise_matrices(results)
        packed = super().pack_single_results(results)
        for key in self.mask_keys:
            if key not in results:
                continue
            masks = results[key]
            if not isinstance(masks, torch.Tensor):
                masks = torch.from_numpy(np.ascontiguousarray(masks))
            setattr(packed['data_samples'], key, masks.bool())
        return packed

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(keys={self.keys + self.mask_keys}'
                f', meta_keys={self.meta_keys})')
