"""Batch the camera/LiDAR inputs and stack the per-sample frame matrices.

Shapes: B batch, N cameras, H/W image size, M voxels, P points per voxel.
On top of mmdet3d's ``Det3DDataPreprocessor`` (image normalisation and
padding to (B, N, 3, H, W), hard voxelisation with mmcv's op, which has a
CPU kernel), the returned ``inputs`` dict carries the frame matrices the view
transform needs, as float32 tensors on the model's device:

- ``cam2img`` (B, N, 4, 4): camera -> image pixels (intrinsics, padded).
- ``lidar2cam`` (B, N, 4, 4): LiDAR -> camera.
- ``img_aug_matrix`` (B, N, 4, 4): original -> augmented pixels
  (identity when the pipeline had no image augmentation).
- ``lidar_aug_matrix`` (B, 4, 4): original -> augmented LiDAR frame
  (identity when the pipeline had no BEV augmentation).
"""
import numpy as np
import torch

from mmdet3d.models.data_preprocessors import Det3DDataPreprocessor
from mmdet3d.registry import MODELS

CAMERA_MATRIX_KEYS = ('cam2img', 'lidar2cam', 'img_aug_matrix')


def _as_4x4(mats, name: str, token) -> np.ndarray:
    arr = np.asarray(mats, dtype=np.float32)
    if arr.shape[-2:] == (3, 3):  # intrinsics stored 3x3
        pad = np.zeros(arr.shape[:-2] + (4, 4), dtype=np.float32)
        pad[..., :3, :3] = arr
        pad[..., 3, 3] = 1
        arr = pad
    if arr.shape[-2:] != (4, 4):
        raise ValueError(f'sample {token}: {name} has shape {arr.shape}, '
                         'expected (..., 4, 4)')
    if not np.isfinite(arr).all():
        raise ValueError(f'sample {token}: {name} contains NaN/inf')
    return arr


@MODELS.register_module()
class MultiModalDataPreprocessor(Det3DDataPreprocessor):
    """``Det3DDataPreprocessor`` + stacked frame matrices (see module doc)."""

    def simple_process(self, data: dict, training: bool = False) -> dict:
        out = super().simple_process(data, training)
        inputs, samples = out['inputs'], out['data_samples']
        if samples is None:
            return out
        device = self.device
        if 'imgs' in inputs:
            num_cams = inputs['imgs'].shape[1]
            for key in CAMERA_MATRIX_KEYS:
                inputs[key] = torch.from_numpy(
                    np.stack([self._camera_matrix(s, key, num_cams)
                              for s in samples])).to(device)
        inputs['lidar_aug_matrix'] = torch.from_numpy(
            np.stack([self._lidar_aug(s) for s in samples])).to(device)
        return out

    @staticmethod
    def _token(sample):
        return sample.metainfo.get('token', sample.metainfo.get('sample_idx'))

    def _camera_matrix(self, sample, key: str, num_cams: int) -> np.ndarray:
        meta = sample.metainfo
        if key not in meta:
            if key == 'img_aug_matrix':
                return np.tile(np.eye(4, dtype=np.float32), (num_cams, 1, 1))
            raise KeyError(f'sample {self._token(sample)}: metainfo lacks '
                           f'{key!r}; add it to the pack meta_keys')
        arr = _as_4x4(meta[key], key, self._token(sample))
        if arr.shape[0] != num_cams:
            raise ValueError(f'sample {self._token(sample)}: {key} has '
                             f'{arr.shape[0]} cameras, images have '
                             f'{num_cams}')
        return arr

    def _lidar_aug(self, sample) -> np.ndarray:
        mat = sample.metainfo.get('lidar_aug_matrix')
        if mat is None:
            return np.eye(4, dtype=np.float32)
        return _as_4x4(mat, 'lidar_aug_matrix', self._token(sample))
