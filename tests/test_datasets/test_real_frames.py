"""Calibration chain, boxes and augmentation checked on real Sample A.

Sample A (nuScenes v1.0-mini, scene-0061) goes through our dataset and
loaders; the expectations come from independent sources: the devkit-made
per-camera 2D boxes (``cam_instances``), the devkit's ``num_lidar_pts``,
the ``cam2ego``/``lidar2ego`` chain and mmcv's ``points_in_boxes_cpu``.
"""
import copy
import pickle

import numpy as np
import pytest
import torch
from mmcv.ops import points_in_boxes_cpu

from fuller.datasets.map_mask_io import save_map_masks
from fuller.datasets.nuscenes_multitask_dataset import \
    NuScenesMultiTaskDataset
from fuller.datasets.transforms.bev_aug import (BEVGlobalRotScaleTrans,
                                                BEVRandomFlip3D)
from fuller.datasets.transforms.loading import (CAMERAS, LoadBEVMapMasks,
                                                LoadNuScenesPoints)
from fuller.structures.frames import BEVGrid
from fuller.testing import SHARED_REAL

REAL = SHARED_REAL
# every test here reads the real frames: skipped (or failed in CI) without them
pytestmark = pytest.mark.usefixtures('real_nuscenes_root')
INFO_A = REAL / 'infos' / 'sample_a_infos_v2.pkl'
W, H = 1600, 900


@pytest.fixture(scope='module')
def frame():
    prefix = dict(pts='samples/LIDAR_TOP',
                  sweeps='samples/LIDAR_TOP',
                  **{c: f'samples/{c}'
                     for c in CAMERAS})
    ds = NuScenesMultiTaskDataset(data_root=str(REAL),
                                  ann_file=str(INFO_A),
                                  data_prefix=prefix,
                                  with_map=False)
    info = ds.get_data_info(0)
    points = LoadNuScenesPoints()(dict(lidar_path=info['lidar_path'],
                                       timestamp=info['timestamp']))['points']
    with open(INFO_A, 'rb') as f:
        raw = pickle.load(f)['data_list'][0]
    return dict(info=info,
                points=points,
                raw=raw,
                boxes=info['ann_info']['gt_bboxes_3d'],
                num_pts=info['ann_info']['num_lidar_pts'])


def project(lidar2img, xyz):
    """(P, 3) LiDAR points -> (P, 2) pixels and (P,) depth."""
    q = xyz @ lidar2img[:3, :3].T + lidar2img[:3, 3]
    depth = q[:, 2]
    return q[:, :2] / np.where(np.abs(depth) < 1e-6, 1e-6, depth)[:, None], \
        depth


def in_image(uv, depth):
    return ((depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) &
            (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1))


def box_point_counts(points, boxes):
    """Points inside each box, by mmcv's op (bottom-centre boxes)."""
    inside = points_in_boxes_cpu(points.tensor[None, :, :3].float(),
                                 boxes.tensor[None, :, :7].float())
    return inside[0].sum(0).numpy(), inside[0].bool()


def test_points_in_camera_frustum_project_into_image(frame):
    """Frustum from cam2ego/lidar2ego vs. projection through lidar2img.

    The two chains differ by the ego motion between the LiDAR and camera
    timestamps (up to 0.33 m here), hence a margin of 0.5 m / depth.
    """
    xyz = frame['points'].tensor[:, :3].double().numpy()
    lidar2ego = np.asarray(frame['raw']['lidar_points']['lidar2ego'])
    for i, cam in enumerate(CAMERAS):
        cam_raw = frame['raw']['images'][cam]
        lidar2cam_indep = np.linalg.inv(cam_raw['cam2ego']) @ lidar2ego
        p = xyz @ lidar2cam_indep[:3, :3].T + lidar2cam_indep[:3, 3]
        k = np.asarray(cam_raw['cam2img'])
        ok = p[:, 2] > 2.0
        tx, ty = p[:, 0] / p[:, 2], p[:, 1] / p[:, 2]
        margin = 0.5 / np.abs(p[:, 2]) + 0.003
        lo_x, hi_x = -k[0, 2] / k[0, 0], (W - 1 - k[0, 2]) / k[0, 0]
        lo_y, hi_y = -k[1, 2] / k[1, 1], (H - 1 - k[1, 2]) / k[1, 1]
        inside = ok & (tx > lo_x + margin) & (tx < hi_x - margin) & \
            (ty > lo_y + margin) & (ty < hi_y - margin)
        outside = ~ok & (p[:, 2] < -2.0) | ok & ((tx < lo_x - margin) |
                                                 (tx > hi_x + margin) |
                                                 (ty < lo_y - margin) |
                                                 (ty > hi_y + margin))
        uv, depth = project(frame['info']['lidar2img'][i], xyz)
        hit = in_image(uv, depth)
        assert inside.sum() > 500, cam
        assert hit[inside].mean() > 0.999, cam
        assert hit[outside].mean() < 0.001, cam


def _match_cam_instances(frame, cam_idx, cam):
    """Pairs (our box index, devkit cam instance) by 3D centre in the
    camera frame; our centre goes through our lidar2cam."""
    lidar2cam = frame['info']['lidar2cam'][cam_idx]
    centres = frame['boxes'].gravity_center.double().numpy()
    centres_cam = centres @ lidar2cam[:3, :3].T + lidar2cam[:3, 3]
    pairs = []
    for inst in frame['raw']['cam_instances'][cam]:
        dist = np.linalg.norm(centres_cam - np.asarray(inst['bbox_3d'][:3]),
                              axis=1)
        j = int(np.argmin(dist))
        if dist[j] < 0.3:
            pairs.append((j, inst, dist[j]))
    return pairs


def _iou_2d(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def test_projected_boxes_match_devkit_2d_boxes(frame):
    """Our boxes projected through lidar2img vs. the devkit's 2D boxes
    (made from the annotations via global -> camera ego pose -> camera)."""
    corners = frame['boxes'].corners.double().numpy()  # (M, 8, 3)
    errors, ious, total = [], [], 0
    for i, cam in enumerate(CAMERAS):
        pairs = _match_cam_instances(frame, i, cam)
        total += len(frame['raw']['cam_instances'][cam])
        for j, inst, _ in pairs:
            uv, depth = project(frame['info']['lidar2img'][i], corners[j])
            uv = uv[depth > 0.1]
            ours = np.array([
                uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()
            ])
            ours = np.clip(ours, 0, [W, H, W, H])
            errors.append(np.abs(ours - inst['bbox']).max())
            ious.append(_iou_2d(ours, inst['bbox']))
    assert len(errors) >= 40 and len(errors) >= 0.6 * total
    # About a pixel: info boxes keep yaw only, the devkit's keep the small
    # pitch/roll of the ego pose (a few cm at the corners). Truncated boxes
    # differ more (the devkit clips the corners' hull, we clip the extent).
    assert np.median(errors) < 1.5
    assert np.mean(np.array(errors) < 4.0) > 0.85
    assert np.mean(np.array(ious) > 0.8) > 0.9


def test_box_points_land_in_devkit_2d_boxes(frame):
    """Points inside a GT box (>= 10) project into its devkit 2D box."""
    counts, inside = box_point_counts(frame['points'], frame['boxes'])
    xyz = frame['points'].tensor[:, :3].double().numpy()
    fractions = []
    for i, cam in enumerate(CAMERAS):
        for j, inst, _ in _match_cam_instances(frame, i, cam):
            if counts[j] < 10:
                continue
            uv, depth = project(frame['info']['lidar2img'][i],
                                xyz[inside[:, j].numpy()])
            keep = in_image(uv, depth)
            if keep.sum() < 10:
                continue
            x1, y1, x2, y2 = inst['bbox']
            uv = uv[keep]
            hit = ((uv[:, 0] >= x1 - 3) & (uv[:, 0] <= x2 + 3) &
                   (uv[:, 1] >= y1 - 3) & (uv[:, 1] <= y2 + 3))
            fractions.append(hit.mean())
    assert len(fractions) >= 8
    assert np.mean(np.array(fractions) > 0.95) > 0.9


def test_gt_boxes_enclose_their_points(frame):
    counts, _ = box_point_counts(frame['points'], frame['boxes'])
    n = np.asarray(frame['num_pts'])
    many = n >= 5
    assert many.sum() >= 15
    assert np.mean(counts[many] > 0) > 0.95
    rel = np.abs(counts[many] - n[many]) / n[many]
    assert np.median(rel) < 0.1
    assert abs(counts.sum() - n.sum()) < 0.1 * n.sum()
    # control: treating the info's (gravity-centre) z as the bottom loses
    # most points, so the check above can tell the two conventions apart
    wrong = frame['boxes'].clone()
    wrong.tensor[:, 2] += wrong.tensor[:, 5] / 2
    wrong_counts, _ = box_point_counts(frame['points'], wrong)
    assert wrong_counts.sum() < 0.7 * counts.sum()


def _augment(results, seed, angle=None):
    rot = BEVGlobalRotScaleTrans(rot_range=(-0.8, 0.8),
                                 scale_ratio_range=(0.95, 1.05),
                                 translation_std=(0.5, 0.5, 0.2))
    flip = BEVRandomFlip3D(0.5, 0.5)
    np.random.seed(seed)
    if angle is None:
        results = rot(results)
        return flip(results)
    results = rot.apply(results, angle, 1.05, np.array([0.7, -0.4, 0.1]))
    return flip.apply(results, True, True)


@pytest.mark.parametrize('seed,angle', [(0, 0.5), (1, None), (2, None),
                                        (3, -2.5)])
def test_augmentation_keeps_points_in_their_boxes(frame, seed, angle):
    results = dict(points=copy.deepcopy(frame['points']),
                   gt_bboxes_3d=frame['boxes'].clone())
    before, _ = box_point_counts(results['points'], results['gt_bboxes_3d'])
    out = _augment(results, seed, angle)
    after, _ = box_point_counts(out['points'], out['gt_bboxes_3d'])
    assert np.mean(before == after) > 0.97
    assert np.abs(before - after).sum() <= max(3, 0.01 * before.sum())
    # lidar_aug_matrix maps the original points onto the augmented ones
    mat = torch.as_tensor(out['lidar_aug_matrix'], dtype=torch.float64)
    orig = frame['points'].tensor[:, :3].double()
    moved = orig @ mat[:3, :3].T + mat[:3, 3]
    np.testing.assert_allclose(moved,
                               out['points'].tensor[:, :3].double(),
                               atol=1e-3)


def _footprint(boxes, grid):
    """(Y, X) cells whose centre lies inside any box's BEV rectangle."""
    ys, xs = grid.cell_centers()
    yy, xx = np.meshgrid(ys, xs, indexing='ij')
    cells = np.stack([xx.ravel(), yy.ravel()], axis=1)
    out = np.zeros(len(cells), dtype=bool)
    for corners in boxes.corners[:, :, :2].double().numpy():
        quad = np.unique(np.round(corners, 6), axis=0)  # 4 BEV corners
        centre = quad.mean(0)
        order = np.argsort(
            np.arctan2(quad[:, 1] - centre[1], quad[:, 0] - centre[0]))
        quad = quad[order]  # counter-clockwise
        edges = np.roll(quad, -1, axis=0) - quad
        rel = cells[:, None, :] - quad[None]
        cross = edges[None, :, 0] * rel[..., 1] - edges[None, :, 1] * rel[...,
                                                                          0]
        out |= (cross >= 0).all(1)
    return out.reshape(grid.shape)


def _iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


@pytest.mark.parametrize('seed,angle', [(0, 0.5), (5, None), (3, -2.5)])
def test_masks_move_with_boxes(frame, tmp_path, seed, angle):
    grid = BEVGrid((-50.0, 50.0), (-40.0, 40.0), 0.25)  # Y=320, X=400
    boxes = frame['boxes']
    reach = boxes.corners[:, :, :2].norm(dim=-1).max(1).values
    boxes = boxes[reach < 36.0]  # stays inside the grid after augmentation
    assert len(boxes) >= 15
    half = len(boxes) // 2
    masks = np.stack([_footprint(boxes, grid), _footprint(boxes[:half], grid)])
    path = str(tmp_path / 'masks.npz')
    save_map_masks(path, masks, ('drivable_area', 'walkway'))
    loader = LoadBEVMapMasks(grid.x_range,
                             grid.y_range,
                             0.25,
                             classes=('drivable_area', 'walkway'))
    results = loader(dict(map_mask_path=path, gt_bboxes_3d=boxes.clone()))
    out = _augment(results, seed, angle)
    assert out['gt_masks_bev'].shape == (2, 320, 400)
    subsets = [out['gt_bboxes_3d'], out['gt_bboxes_3d'][:half]]
    for c, subset in enumerate(subsets):
        expected = _footprint(subset, grid)
        assert _iou(out['gt_masks_bev'][c], expected) > 0.8
        # control: the un-augmented mask does not fit the moved boxes
        assert _iou(masks[c], expected) < 0.3
