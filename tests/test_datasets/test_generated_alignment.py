"""On the generated dataset: after BEV augmentation (rotation, scale,
translation, flips) the points, the 3D boxes and the cached map masks stay
aligned: per-box point counts are unchanged, and vehicles still stand on
the drivable area of the (warped) map mask as often as before."""
import copy

import numpy as np
import pytest
import torch
from mmcv.ops import points_in_boxes_cpu

import fuller  # noqa: F401
from fuller.datasets.transforms.bev_aug import (BEVGlobalRotScaleTrans,
                                                BEVRandomFlip3D)
from fuller.structures import BEVGrid
from mmdet3d.registry import DATASETS

MAP_GRID = dict(x_range=(-50.0, 50.0), y_range=(-50.0, 50.0), cell_size=0.5)
CAMERAS = ['CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK',
           'CAM_BACK_LEFT', 'CAM_BACK_RIGHT']
VEHICLES = (0, 1, 2, 3, 4)  # car, truck, trailer, bus, construction_vehicle


@pytest.fixture(scope='module')
def loaded_samples(synthetic_dataroot):
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')
    dataset = DATASETS.build(dict(
        type='NuScenesMultiTaskDataset', data_root=str(synthetic_dataroot),
        ann_file='nuscenes_infos_train.pkl',
        data_prefix=dict(pts='samples/LIDAR_TOP', sweeps='sweeps/LIDAR_TOP',
                         map_mask_root='',
                         **{c: f'samples/{c}' for c in CAMERAS}),
        modality=dict(use_lidar=True, use_camera=False),
        metainfo=dict(version='v1.0-mini'), filter_empty_gt=False,
        pipeline=[dict(type='LoadNuScenesPoints', sweeps_num=0),
                  dict(type='LoadAnnotations3D', with_bbox_3d=True,
                       with_label_3d=True),
                  dict(type='LoadBEVMapMasks', **MAP_GRID)]))
    return [dataset[i] for i in range(len(dataset))]


def box_point_counts(results):
    points = results['points'].tensor[:, :3]
    boxes = results['gt_bboxes_3d'].tensor[:, :7]  # bottom centre, no vel.
    inside = points_in_boxes_cpu(points[None].float(), boxes[None].float())
    return inside[0].sum(0).numpy()


def vehicles_on_road(results):
    """Fraction of vehicle box centres inside the map grid that fall on a
    drivable_area cell of the sample's map mask."""
    grid = BEVGrid(**MAP_GRID)
    centres = results['gt_bboxes_3d'].gravity_center.numpy()
    labels = np.asarray(results['gt_labels_3d'])
    sel = np.isin(labels, VEHICLES)
    iy, ix = grid.cell_index(centres[sel, 0], centres[sel, 1])
    inside = (iy >= 0) & (iy < grid.ny) & (ix >= 0) & (ix < grid.nx)
    masks = np.asarray(results['gt_masks_bev'])
    on = masks[0, iy[inside], ix[inside]]
    return on.mean(), int(inside.sum())


@pytest.mark.parametrize('angle,scale,flips', [
    (0.6, 1.05, (False, False)),
    (-0.9, 0.95, (True, False)),
    (2.5, 1.0, (True, True)),
])
def test_augmentation_keeps_points_boxes_masks_aligned(loaded_samples, angle,
                                                       scale, flips):
    rot = BEVGlobalRotScaleTrans(rot_range=(-np.pi, np.pi),
                                 scale_ratio_range=(0.9, 1.1))
    flip = BEVRandomFlip3D()
    checked = 0
    for sample in loaded_samples:
        before = copy.deepcopy(sample)
        counts_before = box_point_counts(before)
        road_before, n_before = vehicles_on_road(before)
        after = rot.apply(copy.deepcopy(sample), angle, scale,
                          np.array([1.0, -0.5, 0.0]))
        after = flip.apply(after, *flips)
        # every box keeps its points (the same rigid map moved both)
        np.testing.assert_array_equal(box_point_counts(after), counts_before)
        road_after, n_after = vehicles_on_road(after)
        if n_before >= 3 and n_after >= 3:
            # generated vehicles stand on roads; the warped mask agrees
            assert road_before > 0.8
            assert road_after > 0.8, (road_before, road_after)
            checked += 1
        mat = np.asarray(after['lidar_aug_matrix'])
        assert np.allclose(abs(np.linalg.det(mat[:3, :3])), scale ** 3)
    assert checked >= 1
    assert torch.is_tensor(after['points'].tensor)
