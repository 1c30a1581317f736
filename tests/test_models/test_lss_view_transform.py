"""LSS view transforms: geometry checked by hand and on real nuScenes
calibration, the splat of a one-hot depth into the predicted BEV cell, the
sparse LiDAR depth map, shapes and errors.

The synthetic camera looks along +x of the LiDAR frame (cam x = -y_lidar,
cam y = -z_lidar, cam z = x_lidar) from position CAM_POS. The BEV grid is
non-square in cells and in cell size, so any x/y swap fails.
"""
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet3d.registry import MODELS

from fuller.models.view_transforms.lss_view_transform import (
    DepthLSSViewTransform, LSSViewTransform)
from fuller.structures.frames import make_transform
from fuller.testing import SHARED_REAL

REAL = SHARED_REAL

IMAGE_HW, FEAT_HW = (32, 48), (4, 6)  # stride 8
GRID = dict(xbound=(-10., 14., 0.5), ybound=(-9., 9., 1.0),
            zbound=(-3., 5., 8.))
DBOUND = (1., 11., 1.)  # D = 10 bins at 1, 2, ..., 10 m
CAM_POS = (1.0, 0.5, 0.0)
R_LIDAR2CAM = np.array([[0., -1., 0.], [0., 0., -1.], [1., 0., 0.]])

# Image augmentation: original 96 x 64 image, resize 0.75, crop (12, 16),
# horizontal flip of the 48 x 32 result.
ORIG_K = dict(f=40., cx=48., cy=32.)
NO_AUG_K = dict(f=20., cx=24., cy=16.)  # camera already 48 x 32
SCALE, CROP = 0.75, (12., 16.)
# BEV augmentation: rotate 90 deg about z, scale 1.1, translate, flip y.
THETA, BEV_SCALE, BEV_T = math.pi / 2, 1.1, (0.3, -0.2, 0.1)


def intrinsics(f, cx, cy):
    mat = np.eye(4)
    mat[:3, :3] = [[f, 0, cx], [0, f, cy], [0, 0, 1]]
    return mat


def img_aug_matrix():
    resize = np.diag([SCALE, SCALE, 1., 1.])
    crop = make_transform(np.eye(3), (-CROP[0], -CROP[1], 0.))
    flip = make_transform(np.diag([-1., 1., 1.]), (IMAGE_HW[1], 0., 0.))
    return flip @ crop @ resize


def lidar_aug_matrix():
    c, s = math.cos(THETA), math.sin(THETA)
    rot_scale_trans = make_transform(
        BEV_SCALE * np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]), BEV_T)
    flip_y = np.diag([1., -1., 1., 1.])
    return flip_y @ rot_scale_trans


def hand_lift(u_aug, v_aug, depth, img_aug, bev_aug):
    """Scalar formulas for a frustum node -> augmented LiDAR (x, y, z)."""
    if img_aug:
        k = ORIG_K
        u = (IMAGE_HW[1] - u_aug + CROP[0]) / SCALE  # undo flip, crop, resize
        v = (v_aug + CROP[1]) / SCALE
    else:
        k, u, v = NO_AUG_K, u_aug, v_aug
    x_cam = (u - k['cx']) * depth / k['f']
    y_cam = (v - k['cy']) * depth / k['f']
    x, y, z = depth + CAM_POS[0], -x_cam + CAM_POS[1], -y_cam + CAM_POS[2]
    if bev_aug:
        c, s = math.cos(THETA), math.sin(THETA)
        x, y = c * x - s * y, s * x + c * y
        x, y, z = (BEV_SCALE * x + BEV_T[0], BEV_SCALE * y + BEV_T[1],
                   BEV_SCALE * z + BEV_T[2])
        y = -y
    return x, y, z


def camera_batch(img_aug, bev_aug, batch=2, cams=2):
    """(cam2img, lidar2cam, img_aug_matrix, lidar_aug_matrix) tensors."""
    k = ORIG_K if img_aug else NO_AUG_K
    lidar2cam = make_transform(R_LIDAR2CAM, -R_LIDAR2CAM @ np.array(CAM_POS))
    aug = img_aug_matrix() if img_aug else np.eye(4)
    bev = lidar_aug_matrix() if bev_aug else np.eye(4)

    def tile(mat, shape):
        return torch.tensor(mat, dtype=torch.float32).expand(*shape, 4, 4)

    return (tile(intrinsics(**k), (batch, cams)),
            tile(lidar2cam, (batch, cams)), tile(aug, (batch, cams)),
            tile(bev, (batch, )))


def build_lss(channels=3, **over):
    cfg = dict(in_channels=channels, out_channels=channels,
               image_size=IMAGE_HW, feature_size=FEAT_HW, dbound=DBOUND,
               **GRID)
    cfg.update(over)
    return LSSViewTransform(**cfg)


def one_hot_depth_net(vt, depth_bin):
    """Depth net output: depth logits one-hot at ``depth_bin`` everywhere,
    context = the input features."""
    num_d, chans = vt.depth_bins, vt.out_channels
    with torch.no_grad():
        vt.depth_net.weight.zero_()
        vt.depth_net.bias.zero_()
        vt.depth_net.bias[depth_bin] = 40.
        vt.depth_net.weight[num_d:, :, 0, 0] = torch.eye(chans)


def test_grid_and_frustum_layout():
    vt = build_lss()
    assert vt.grid_shape == (1, 18, 48)
    assert vt.depth_bins == 10
    assert vt.frustum.shape == (10, 4, 6, 3)
    # Feature pixel (i=1, j=4) of stride 8 covers image pixels u 32..39,
    # v 8..15; with pixel centres at integers its centre is (35.5, 11.5).
    torch.testing.assert_close(vt.frustum[5, 1, 4],
                               torch.tensor([35.5, 11.5, 6.]))
    assert 'frustum' not in dict(vt.named_parameters())
    assert not {'frustum', 'z_range'} & set(vt.state_dict())
    assert 'frustum' in dict(vt.named_buffers())


@pytest.mark.parametrize('img_aug', [False, True])
@pytest.mark.parametrize('bev_aug', [False, True])
def test_get_geometry_matches_hand_formula(img_aug, bev_aug):
    vt = build_lss()
    geom = vt.get_geometry(*camera_batch(img_aug, bev_aug))
    assert geom.shape == (2, 2, 10, 4, 6, 3)
    for (k, i, j) in [(5, 1, 4), (0, 0, 0), (9, 3, 5), (2, 2, 1)]:
        u_aug, v_aug, depth = (j + 0.5) * 8 - 0.5, (i + 0.5) * 8 - 0.5, 1. + k
        expected = hand_lift(u_aug, v_aug, depth, img_aug, bev_aug)
        torch.testing.assert_close(geom[1, 1, k, i, j],
                                   torch.tensor(expected), atol=1e-4,
                                   rtol=1e-5)


def test_geometry_is_float32_under_autocast():
    # u * d reaches 1e5 in real configs; a bfloat16/float16 einsum would
    # move points by metres.
    vt = build_lss(image_size=(256, 704), feature_size=(32, 88),
                   dbound=(1., 60., 0.5))
    cams = camera_batch(True, True, batch=1, cams=1)
    ref = vt.get_geometry(*cams)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        amp = vt.get_geometry(*cams)
    assert amp.dtype == torch.float32
    torch.testing.assert_close(amp, ref)


def test_hand_formula_sanity():
    # Without augmentation, node (36, 12, 6 m) is 6 m ahead, 3.6 m right and
    # 1.2 m above the camera: (7, -3.1, 1.2) in the LiDAR frame.
    np.testing.assert_allclose(hand_lift(36., 12., 6., False, False),
                               (7., -3.1, 1.2))


@pytest.mark.parametrize('img_aug', [False, True])
@pytest.mark.parametrize('bev_aug', [False, True])
def test_one_hot_depth_lands_in_predicted_cell(img_aug, bev_aug):
    vt = build_lss().eval()
    (k, i, j) = (5, 1, 4)
    one_hot_depth_net(vt, k)
    img_feats = torch.zeros(2, 2, 3, *FEAT_HW)
    img_feats[1, 1, :, i, j] = torch.tensor([1., 2., 3.])
    bev = vt(img_feats, *camera_batch(img_aug, bev_aug))
    assert bev.shape == (2, 3, 18, 48)

    x, y, _ = hand_lift((j + 0.5) * 8 - 0.5, (i + 0.5) * 8 - 0.5, 1. + k, img_aug,
                        bev_aug)
    iy, ix = math.floor((y + 9.) / 1.0), math.floor((x + 10.) / 0.5)
    assert 0 <= iy < 18 and 0 <= ix < 48
    hot = (bev.abs() > 1e-6).any(dim=1).nonzero().tolist()
    assert hot == [[1, iy, ix]]
    torch.testing.assert_close(bev[1, :, iy, ix], torch.tensor([1., 2., 3.]))


def test_z_bins_are_concatenated_z_major():
    # Two z bins: [-3, 1) and [1, 5); the node lifted to z = 1.2 m is in bin 1.
    vt = build_lss(zbound=(-3., 5., 4.))
    (k, i, j) = (5, 1, 4)
    one_hot_depth_net(vt, k)
    img_feats = torch.zeros(1, 1, 3, *FEAT_HW)
    img_feats[0, 0, :, i, j] = torch.tensor([1., 2., 3.])
    cams = camera_batch(False, False, batch=1, cams=1)
    geom = vt.get_geometry(*cams)
    pooled = vt.lift_splat(vt.depth_net(img_feats.flatten(0, 1)), geom)
    assert pooled.shape == (1, 6, 18, 48)
    x, y, z = hand_lift((j + 0.5) * 8 - 0.5, (i + 0.5) * 8 - 0.5, 1. + k,
                        False, False)
    assert 1. <= z < 5.  # the upper z bin
    iy, ix = math.floor((y + 9.) / 1.0), math.floor((x + 10.) / 0.5)
    # (x, y) = (7, -2.95) -> iy = floor(6.05) = 6, ix = floor(17 / 0.5) = 34
    assert (iy, ix) == (6, 34)
    torch.testing.assert_close(pooled[0, :, iy, ix],
                               torch.tensor([0., 0., 0., 1., 2., 3.]))
    assert (pooled.abs() > 1e-6).sum() == 3


def test_downsample_shape_grad_and_registry():
    vt = MODELS.build(dict(type='LSSViewTransform', in_channels=5,
                           out_channels=4, image_size=IMAGE_HW,
                           feature_size=FEAT_HW, dbound=DBOUND, downsample=2,
                           **GRID))
    assert vt.output_grid.shape == (9, 24)
    img_feats = torch.randn(2, 2, 5, *FEAT_HW, requires_grad=True)
    bev = vt(img_feats, *camera_batch(True, True))
    assert bev.shape == (2, 4, 9, 24)
    bev.square().sum().backward()
    assert img_feats.grad.abs().sum() > 0
    assert vt.depth_net.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('over,match', [
    (dict(downsample=5), 'downsample'),
    (dict(dbound=(5., 1., 1.)), 'dbound'),
    (dict(dbound=(0., 10., 1.)), 'positive depth'),
    (dict(image_size=(32, 0)), 'image_size'),
    (dict(xbound=(-10., 14., 0.7)), 'whole number'),
    (dict(zbound=(-3., 5., 3.)), 'zbound'),
])
def test_bad_config_raises(over, match):
    with pytest.raises(ValueError, match=match):
        build_lss(**over)


def test_unknown_config_key_fails():
    with pytest.raises(TypeError):
        build_lss(depth_channels=7)


def test_bad_input_shapes_raise():
    vt = build_lss()
    cams = camera_batch(False, False)
    with pytest.raises(ValueError, match='img_feats'):
        vt(torch.zeros(2, 2, 3, 5, 6), *cams)
    with pytest.raises(ValueError, match='lidar_aug_matrix'):
        vt(torch.zeros(2, 2, 3, *FEAT_HW), *cams[:3], cams[3][0])


# ------------------------------------------------------------- real chain
def _real_sample():
    with open(REAL / 'infos' / 'sample_a_infos_v2.pkl', 'rb') as f:
        info = pickle.load(f)['data_list'][0]
    path = REAL / 'samples' / 'LIDAR_TOP' / Path(
        info['lidar_points']['lidar_path']).name
    points = np.fromfile(path, dtype=np.float32).reshape(-1, 5)[:, :3]
    return info, points.astype(np.float64)


@pytest.mark.usefixtures('real_nuscenes_root')
def test_real_calibration_round_trip():
    """Real LiDAR points -> pixel and depth of each real camera -> nearest
    frustum node -> get_geometry returns the (augmented) point."""
    info, points_lidar = _real_sample()
    names = sorted(info['images'])
    scale, crop = 0.48, (32., 176.)  # 1600 x 900 -> 704 x 256 (BEVFusion)
    aug = make_transform(np.eye(3), (-crop[0], -crop[1], 0.)) @ np.diag(
        [scale, scale, 1., 1.])
    bev_aug = lidar_aug_matrix()
    cam2img = np.stack([intrinsics(1, 0, 0) for _ in names])
    for n, name in enumerate(names):
        cam2img[n, :3, :3] = info['images'][name]['cam2img']
    lidar2cam = np.stack([info['images'][n]['lidar2cam'] for n in names])
    vt = build_lss(image_size=(256, 704), feature_size=(32, 88),
                   dbound=(1., 60., 0.5))
    geom = vt.get_geometry(
        torch.tensor(cam2img[None]), torch.tensor(lidar2cam[None]),
        torch.tensor(aug).expand(1, 6, 4, 4),
        torch.tensor(bev_aug[None])).double().numpy()[0]
    pts_h = np.c_[points_lidar, np.ones(len(points_lidar))]
    for n in range(6):
        pts_cam = pts_h @ lidar2cam[n].T
        depth = pts_cam[:, 2]
        uv = pts_cam[:, :3] @ cam2img[n, :3, :3].T
        uv = uv[:, :2] / np.maximum(depth, 1e-6)[:, None]
        uv_aug = uv * scale - np.array(crop)
        keep = ((depth > 1.) & (depth < 59.5) & (uv_aug[:, 0] >= 0) &
                (uv_aug[:, 0] < 704) & (uv_aug[:, 1] >= 0) &
                (uv_aug[:, 1] < 256))
        assert keep.sum() > 200, name  # each camera sees the scan
        uv_aug, depth, pts = uv_aug[keep], depth[keep], pts_h[keep]
        j = np.clip(np.round((uv_aug[:, 0] + 0.5) / 8 - 0.5), 0, 87).astype(int)
        i = np.clip(np.round((uv_aug[:, 1] + 0.5) / 8 - 0.5), 0, 31).astype(int)
        k = np.clip(np.round((depth - 1.) / 0.5), 0, 117).astype(int)
        lifted = geom[n, k, i, j]
        target = (pts @ bev_aug.T)[:, :3]
        # p(u1,v1,d1) - p(u0,v0,d0) = d1 (du/fx, dv/fy, 0)
        #   + dd ((u0-cx)/fx, (v0-cy)/fy, 1), times the BEV scale.
        focal = cam2img[n, [0, 1], [0, 1]]
        du = np.abs((j + 0.5) * 8 - 0.5 - uv_aug[:, 0]) / scale / focal[0]
        dv = np.abs((i + 0.5) * 8 - 0.5 - uv_aug[:, 1]) / scale / focal[1]
        dd = np.abs(1. + 0.5 * k - depth)
        ray = np.linalg.norm(np.c_[(uv[keep] - cam2img[n, :2, 2]) / focal,
                                   np.ones(len(depth))], axis=1)
        bound = BEV_SCALE * ((1. + 0.5 * k) * (du + dv) + dd * ray)
        err = np.linalg.norm(lifted - target, axis=1)
        assert (err <= bound + 1e-3).all(), (name, (err - bound).max())
        assert np.median(err) < 0.3, name


# ------------------------------------------------------- LiDAR depth input
def build_depth_lss(**over):
    cfg = dict(in_channels=3, out_channels=4, image_size=IMAGE_HW,
               feature_size=FEAT_HW, dbound=DBOUND, **GRID)
    cfg.update(over)
    return DepthLSSViewTransform(**cfg)


def cam_to_lidar(x_cam, y_cam, z_cam):
    return (z_cam + CAM_POS[0], -x_cam + CAM_POS[1], -y_cam + CAM_POS[2])


def hand_pixel(x_cam, y_cam, z_cam, img_aug):
    """(row, col) of the img_aug pixel a camera-frame point falls in
    (pixel centres at integer coordinates)."""
    k = ORIG_K if img_aug else NO_AUG_K
    u = k['f'] * x_cam / z_cam + k['cx']
    v = k['f'] * y_cam / z_cam + k['cy']
    if img_aug:
        u = IMAGE_HW[1] - (SCALE * u - CROP[0])
        v = SCALE * v - CROP[1]
    return math.floor(v + 0.5), math.floor(u + 0.5)


@pytest.mark.parametrize('img_aug', [False, True])
@pytest.mark.parametrize('bev_aug', [False, True])
def test_points_to_depth_map(img_aug, bev_aug):
    vt = build_depth_lss()
    near, far = (1.6, -0.45, 5.), (1.6 * 1.6, -0.45 * 1.6, 8.)  # same ray
    behind, aside = (0.2, 0.1, -4.), (20., 0., 5.)
    pts = np.array([cam_to_lidar(*p) for p in (far, near, behind, aside)])
    if bev_aug:
        pts = pts @ lidar_aug_matrix()[:3, :3].T + lidar_aug_matrix()[:3, 3]
    pts = torch.tensor(np.c_[pts, np.zeros((4, 2))], dtype=torch.float32)
    cams = camera_batch(img_aug, bev_aug)
    depth_map = vt.points_to_depth_map([pts[:0], pts], *cams)
    assert depth_map.shape == (4, 1, 32, 48)
    row, col = hand_pixel(*near, img_aug)
    expected = torch.zeros(4, 1, 32, 48)
    expected[2:, 0, row, col] = 5.  # both cameras of sample 1; nearest wins
    torch.testing.assert_close(depth_map, expected, atol=1e-4, rtol=0)


def test_hand_pixel_sanity():
    assert hand_pixel(1.6, -0.45, 5., False) == (14, 30)
    assert hand_pixel(1.6, -0.45, 5., True) == (5, 14)


def test_depth_lss_forward_shape_and_gradients():
    vt = MODELS.build(dict(type='DepthLSSViewTransform', in_channels=3,
                           out_channels=4, image_size=IMAGE_HW,
                           feature_size=FEAT_HW, dbound=DBOUND, downsample=2,
                           **GRID))
    gen = torch.Generator().manual_seed(0)
    points = [torch.rand(200, 5, generator=gen) * 20 - 5 for _ in range(2)]
    img_feats = torch.randn(2, 2, 3, *FEAT_HW, requires_grad=True)
    bev = vt(img_feats, points, *camera_batch(True, True))
    assert bev.shape == (2, 4, 9, 24)
    bev.square().sum().backward()
    assert img_feats.grad.abs().sum() > 0
    assert vt.depth_encoder[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize('feature_size', [(16, 24), (4, 8)])
def test_depth_lss_needs_stride_multiple_of_4(feature_size):
    with pytest.raises(ValueError, match='stride'):
        build_depth_lss(feature_size=feature_size)


def test_depth_lss_point_list_must_match_batch():
    vt = build_depth_lss()
    with pytest.raises(ValueError, match='point clouds'):
        vt(torch.zeros(2, 2, 3, *FEAT_HW), [torch.zeros(3, 5)],
           *camera_batch(False, False))
