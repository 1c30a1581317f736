"""MultiModalDataPreprocessor stacks the per-sample frame matrices to
(B, N, 4, 4) / (B, 4, 4), pads 3x3 intrinsics, fills identity for absent
augmentations and names the sample on bad input."""
import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope

import fuller  # noqa: F401
from fuller.testing import make_multitask_sample
from mmdet3d.registry import MODELS


def build():
    init_default_scope('mmdet3d')
    return MODELS.build(dict(
        type='MultiModalDataPreprocessor', mean=[0., 0., 0.],
        std=[1., 1., 1.], voxel=True, voxel_type='hard',
        voxel_layer=dict(max_num_points=4,
                         point_cloud_range=[-54, -54, -5, 54, 54, 3],
                         voxel_size=[0.6, 0.6, 8.], max_voxels=20000)))


def batch(samples):
    return dict(inputs=dict(points=[s[0]['points'] for s in samples],
                            img=[s[0]['img'] for s in samples]),
                data_samples=[s[1] for s in samples])


def test_matrices_are_stacked_with_identity_defaults():
    samples = [make_multitask_sample(i, num_cams=3) for i in range(2)]
    aug = np.diag([0.5, 0.5, 1., 1.])
    samples[1][1].set_metainfo(dict(img_aug_matrix=np.stack([aug] * 3),
                                    lidar_aug_matrix=np.diag([-1., 1, 1, 1])))
    # 3x3 intrinsics are padded to 4x4
    K = samples[0][1].metainfo['cam2img'][:, :3, :3]
    samples[0][1].set_metainfo(dict(cam2img=K))
    out = build()(batch(samples), training=True)['inputs']
    assert out['imgs'].shape == (2, 3, 3, 64, 192)
    for key in ('cam2img', 'lidar2cam', 'img_aug_matrix'):
        assert out[key].shape == (2, 3, 4, 4) and out[key].dtype == \
            torch.float32
    assert torch.equal(out['cam2img'][0], out['cam2img'][1])
    assert torch.equal(out['img_aug_matrix'][0], torch.eye(4).expand(3, 4, 4))
    assert out['img_aug_matrix'][1, 2, 0, 0] == 0.5
    assert torch.equal(out['lidar_aug_matrix'][0], torch.eye(4))
    assert out['lidar_aug_matrix'][1, 0, 0] == -1
    # hard voxelisation: (M, 4) coords [batch, z, y, x] for both samples
    assert set(out['voxels']['coors'][:, 0].tolist()) == {0, 1}


def test_camera_count_mismatch_names_the_sample():
    samples = [make_multitask_sample(0, num_cams=2)]
    lidar2cam = samples[0][1].metainfo['lidar2cam']
    samples[0][1].set_metainfo(dict(lidar2cam=lidar2cam[:1]))
    with pytest.raises(ValueError, match='sample-0.*lidar2cam'):
        build()(batch(samples), training=False)


def test_nan_matrix_is_rejected():
    samples = [make_multitask_sample(0, num_cams=2)]
    K = samples[0][1].metainfo['cam2img'].copy()
    K[0, 0, 0] = np.nan
    samples[0][1].set_metainfo(dict(cam2img=K))
    with pytest.raises(ValueError, match='NaN'):
        build()(batch(samples), training=False)
