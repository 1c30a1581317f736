"""Hand-made multi-modal multi-task samples with known geometry.

One sample: LiDAR points on the ground plane (z = -1.8 m in the LiDAR frame)
and on up to two boxes, ``num_cams`` pinhole cameras at the LiDAR origin (the
first looking along +x, the second along +y), random image content, and a
road mask (map class 0) along the x axis. Boxes are (x, y, z, l, w, h, yaw,
vx, vy) in the LiDAR frame, bottom-centre origin.
"""
from typing import Sequence, Tuple

import numpy as np
import torch
from mmengine.structures import InstanceData

from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes

BOXES_LIDAR = torch.tensor([[12., 4., -1.8, 4.2, 1.9, 1.6, 0.3, 2., 0.],
                            [-8., -15., -1.8, 0.8, 0.7, 1.8, 1.2, 0., 0.]])
LABELS = torch.tensor([0, 7])  # car, pedestrian

# camera frame: x right, y down, z forward; lidar: x forward, y left, z up
LIDAR2CAM_FRONT = np.array([[0., -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0],
                            [0, 0, 0, 1]])
LIDAR2CAM_LEFT = LIDAR2CAM_FRONT @ np.array(
    [[0., 1, 0, 0], [-1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])


def make_multitask_sample(seed: int, num_boxes: int = 2, num_cams: int = 2,
                          img_size: Tuple[int, int] = (64, 192),
                          map_shape: Tuple[int, int] = (200, 200)):
    """-> (inputs dict(points (P, 5), img (N, 3, H, W)), Det3DDataSample)."""
    g = torch.Generator().manual_seed(seed)
    boxes = BOXES_LIDAR[:num_boxes]
    ground = torch.rand(3000, 2, generator=g) * 100 - 50
    ground = torch.cat([ground, torch.full((3000, 1), -1.8)], 1)
    on_boxes = [b[:3] + (torch.rand(200, 3, generator=g) - 0.5) * b[3:6] *
                torch.tensor([1., 1., 0.]) + torch.tensor([0., 0., 0.8])
                for b in boxes]
    xyz = torch.cat([ground] + on_boxes)
    points = torch.cat([xyz, torch.rand(len(xyz), 1, generator=g),
                        torch.zeros(len(xyz), 1)], 1)
    H, W = img_size
    cam2img = np.array([[80., 0, W / 2, 0], [0, 80., H / 2, 0],
                        [0, 0, 1, 0], [0, 0, 0, 1]])
    lidar2cam = np.stack([LIDAR2CAM_FRONT, LIDAR2CAM_LEFT] *
                         ((num_cams + 1) // 2))[:num_cams]
    sample = Det3DDataSample()
    sample.set_metainfo(dict(
        cam2img=np.stack([cam2img] * num_cams), lidar2cam=lidar2cam,
        token=f'sample-{seed}', box_type_3d=LiDARInstance3DBoxes))
    gt = InstanceData()
    gt.bboxes_3d = LiDARInstance3DBoxes(boxes, box_dim=9)
    gt.labels_3d = LABELS[:num_boxes]
    sample.gt_instances_3d = gt
    masks = torch.zeros((6, ) + tuple(map_shape), dtype=torch.bool)
    rows = slice(map_shape[0] * 2 // 5, map_shape[0] * 3 // 5)
    masks[0, rows, :] = True  # a road along x (rows are y cells)
    sample.gt_masks_bev = masks
    img = torch.rand(num_cams, 3, H, W, generator=g) * 255
    return dict(points=points, img=img), sample


def make_multitask_data(seeds: Sequence[int] = (0, 1), **kwargs) -> dict:
    """Samples for ``seeds`` collated as a data loader does, before the
    data preprocessor: dict(inputs=dict(points, img), data_samples)."""
    items = [make_multitask_sample(s, **kwargs) for s in seeds]
    return dict(inputs=dict(points=[i[0]['points'] for i in items],
                            img=[i[0]['img'] for i in items]),
                data_samples=[i[1] for i in items])


def make_multitask_batch(model, seeds: Sequence[int] = (0, 1),
                         training: bool = True, **kwargs) -> dict:
    """Samples for ``seeds`` through ``model.data_preprocessor``."""
    return model.data_preprocessor(make_multitask_data(seeds, **kwargs),
                                   training=training)


def model_sample_kwargs(model, num_cams: int = 6) -> dict:
    """:func:`make_multitask_sample` keywords that fit ``model`` at its own
    size: ``num_cams`` cameras at the view transform's image size, map
    masks on the seg head's map grid (defaults where a part is absent)."""
    kwargs = dict(num_cams=num_cams)
    if getattr(model, 'view_transform', None) is not None:
        kwargs['img_size'] = tuple(model.view_transform.image_size)
    heads = getattr(model, 'heads', {})
    if 'seg' in heads:
        kwargs['map_shape'] = tuple(heads['seg'].map_grid.shape)
    return kwargs
