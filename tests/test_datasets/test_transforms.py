"""Unit tests of fuller's data transforms and the map-mask cache format.

Small synthetic inputs with hand-computed expectations, plus bad-input
cases on copies of the real files (in tmp_path, never in shared/).
"""
import os

import cv2
import numpy as np
import pytest
import torch
from mmdet3d.structures import LiDARInstance3DBoxes
from mmdet3d.structures.points import LiDARPoints

from fuller.datasets.map_mask_io import (MAP_CLASSES, MapMaskFileError,
                                         load_map_masks,
                                         read_map_mask_class_names,
                                         save_map_masks)
from fuller.datasets.transforms.bev_aug import (BEVGlobalRotScaleTrans,
                                                BEVRandomFlip3D,
                                                warp_bev_masks)
from fuller.datasets.transforms.formatting import PackMultiTaskInputs
from fuller.datasets.transforms.image_aug import ImageAug3D
from fuller.datasets.transforms.loading import (LoadBEVMapMasks,
                                                LoadMultiViewImages,
                                                LoadNuScenesPoints,
                                                load_points)
from fuller.structures.frames import BEVGrid
from fuller.testing import SHARED_REAL

REAL = SHARED_REAL
SAMPLES = REAL / 'samples'
LIDAR_A = (
    SAMPLES / 'LIDAR_TOP' /
    'n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin')
CAM_FRONT_A = (
    SAMPLES / 'CAM_FRONT' /
    'n015-2018-07-24-11-22-45+0800__CAM_FRONT__1532402927612460.jpg')


# --------------------------------------------------------------- map masks
@pytest.mark.parametrize('shape', [(6, 200, 200), (6, 7, 13), (3, 1, 1),
                                   (6, 5, 3)])
def test_map_mask_round_trip(tmp_path, shape):
    rng = np.random.default_rng(0)
    masks = rng.random(shape) < 0.3
    names = MAP_CLASSES[:shape[0]]
    path = str(tmp_path / 'sub' / 'm.npz')
    save_map_masks(path, masks, names)
    out = load_map_masks(path, names)
    assert out.dtype == np.bool_ and out.shape == shape
    np.testing.assert_array_equal(out, masks)
    assert read_map_mask_class_names(path) == names
    assert os.listdir(tmp_path / 'sub') == ['m.npz']  # no temp file left


def test_map_mask_class_selection_and_overwrite(tmp_path):
    masks = np.zeros((6, 4, 9), dtype=bool)
    for c in range(6):
        masks[c, c % 4, c] = True
    path = str(tmp_path / 'm.npz')
    save_map_masks(path, ~masks)
    save_map_masks(path, masks)  # overwrite in place
    out = load_map_masks(path, ('divider', 'drivable_area'))
    np.testing.assert_array_equal(out, masks[[5, 0]])
    np.testing.assert_array_equal(load_map_masks(path, None), masks)
    with pytest.raises(MapMaskFileError, match='lane'):
        load_map_masks(path, ('lane', ))


def test_map_mask_bad_inputs(tmp_path):
    with pytest.raises(TypeError):
        save_map_masks(str(tmp_path / 'a.npz'), np.zeros((6, 2, 2)))
    with pytest.raises(ValueError, match='class names'):
        save_map_masks(str(tmp_path / 'a.npz'), np.zeros((5, 2, 2), bool))
    missing = str(tmp_path / 'missing.npz')
    with pytest.raises(FileNotFoundError, match='missing.npz'):
        load_map_masks(missing)
    garbage = tmp_path / 'garbage.npz'
    garbage.write_bytes(b'not a zip file at all' * 10)
    with pytest.raises(MapMaskFileError, match='garbage.npz'):
        load_map_masks(str(garbage))
    good = tmp_path / 'good.npz'
    save_map_masks(str(good), np.ones((6, 50, 40), dtype=bool))
    truncated = tmp_path / 'truncated.npz'
    truncated.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    with pytest.raises(MapMaskFileError, match='truncated.npz'):
        load_map_masks(str(truncated))
    other = tmp_path / 'other.npz'
    np.savez_compressed(other, masks=np.ones(3))
    with pytest.raises(MapMaskFileError, match='other.npz'):
        load_map_masks(str(other))


def test_load_bev_map_masks_checks_grid(tmp_path):
    grid_masks = np.zeros((6, 8, 12), dtype=bool)
    grid_masks[2, 1, 3] = True
    path = str(tmp_path / 'tok.npz')
    save_map_masks(path, grid_masks)
    loader = LoadBEVMapMasks(x_range=(-3, 3),
                             y_range=(-2, 2),
                             cell_size=0.5,
                             classes=('walkway', 'divider'))
    out = loader(dict(map_mask_path=path))
    np.testing.assert_array_equal(out['gt_masks_bev'], grid_masks[[2, 5]])
    assert out['bev_mask_grid'].shape == (8, 12)
    wrong = LoadBEVMapMasks(x_range=(-2, 2), y_range=(-3, 3), cell_size=0.5)
    with pytest.raises(MapMaskFileError, match='tok.npz'):
        wrong(dict(map_mask_path=path))
    with pytest.raises(KeyError, match='no map_mask_path'):
        loader(dict(token='t'))


# ------------------------------------------------------------------ points
@pytest.mark.usefixtures('real_nuscenes_root')
def test_load_points_reads_real_scan():
    points = load_points(str(LIDAR_A), 5)
    assert points.shape == (34688, 5) and points.dtype == np.float32
    raw = np.fromfile(LIDAR_A, dtype=np.float32).reshape(-1, 5)
    np.testing.assert_array_equal(points, raw)


@pytest.mark.usefixtures('real_nuscenes_root')
@pytest.mark.parametrize('cut', [7, 8, 12])
def test_load_points_rejects_truncated_file(tmp_path, cut):
    data = LIDAR_A.read_bytes()
    bad = tmp_path / 'cut.pcd.bin'
    bad.write_bytes(data[:len(data) - cut])
    with pytest.raises(ValueError, match='cut.pcd.bin'):
        load_points(str(bad), 5)
    loader = LoadNuScenesPoints()
    with pytest.raises(ValueError, match='cut.pcd.bin'):
        loader(dict(lidar_path=str(bad), timestamp=0.0))


def test_load_points_missing_empty_nan(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pcd.bin'):
        load_points(str(tmp_path / 'nope.pcd.bin'))
    empty = tmp_path / 'empty.pcd.bin'
    empty.write_bytes(b'')
    with pytest.raises(ValueError, match='empty.pcd.bin'):
        load_points(str(empty))
    assert load_points(str(empty), allow_empty=True).shape == (0, 5)
    nan = tmp_path / 'nan.pcd.bin'
    np.full((3, 5), np.nan, dtype=np.float32).tofile(nan)
    with pytest.raises(ValueError, match='nan.pcd.bin'):
        load_points(str(nan))


def _write_scan(path, xyz, intensity):
    arr = np.zeros((len(xyz), 5), dtype=np.float32)
    arr[:, :3] = xyz
    arr[:, 3] = intensity
    arr[:, 4] = 7  # ring index, must be dropped
    arr.tofile(path)


def test_multi_sweep_points_in_keyframe_frame(tmp_path):
    key = tmp_path / 'key.pcd.bin'
    sweep = tmp_path / 'sweep.pcd.bin'
    _write_scan(key, [[1.0, 2.0, 0.5]], 10)
    # sweep points in the sweep frame; one of them is on the ego car (close)
    _write_scan(sweep, [[5.0, 0.0, 0.0], [0.2, 0.3, 0.0]], 20)
    # sweep lidar = keyframe lidar rotated 90 deg about z, shifted by 2 m x
    sweep2key = np.array([[0., -1, 0, 2], [1, 0, 0, 0], [0, 0, 1, 0],
                          [0, 0, 0, 1]])
    results = dict(lidar_path=str(key),
                   timestamp=100.0,
                   lidar_sweeps=[
                       dict(lidar_points=dict(
                           lidar_path=str(sweep),
                           lidar2sensor=np.linalg.inv(sweep2key).tolist()),
                            timestamp=99.95)
                   ])
    out = LoadNuScenesPoints(sweeps_num=3, test_mode=True)(results)
    pts = out['points']
    assert isinstance(pts, LiDARPoints)
    # (5, 0, 0) in the sweep frame -> (2, 5, 0) in the keyframe
    expected = np.array([[1, 2, 0.5, 10, 0], [2, 5, 0, 20, 0.05]])
    np.testing.assert_allclose(pts.tensor.numpy(), expected, atol=1e-5)
    only_xyz = LoadNuScenesPoints(use_dim=(0, 1, 2))(dict(lidar_path=str(key),
                                                          timestamp=0.0))
    assert only_xyz['points'].tensor.shape == (1, 3)


# ------------------------------------------------------------------ images
def _image_results(paths):
    cams = [f'CAM_{i}' for i in range(len(paths))]
    return dict(cam_names=cams,
                images={
                    c: dict(img_path=str(p))
                    for c, p in zip(cams, paths)
                })


@pytest.mark.usefixtures('real_nuscenes_root')
def test_load_images_scale_and_matrix():
    out = LoadMultiViewImages(scale=0.25)(_image_results([CAM_FRONT_A] * 2))
    assert len(out['img']) == 2 and out['img'][0].shape == (225, 400, 3)
    expected = np.eye(4)
    expected[0, 0] = expected[1, 1] = 0.25
    expected[0, 3] = expected[1, 3] = 0.5 * 0.25 - 0.5
    np.testing.assert_allclose(out['img_aug_matrix'][1], expected)
    full = LoadMultiViewImages()(_image_results([CAM_FRONT_A]))
    assert full['img'][0].shape == (900, 1600, 3)
    np.testing.assert_array_equal(full['img_aug_matrix'], np.eye(4)[None])


@pytest.mark.usefixtures('real_nuscenes_root')
def test_load_images_bad_files(tmp_path):
    missing = tmp_path / 'gone.jpg'
    with pytest.raises(FileNotFoundError, match='gone.jpg'):
        LoadMultiViewImages()(_image_results([CAM_FRONT_A, missing]))
    garbage = tmp_path / 'garbage.jpg'
    garbage.write_bytes(os.urandom(2000))
    with pytest.raises(ValueError, match='garbage.jpg'):
        LoadMultiViewImages()(_image_results([garbage]))
    data = CAM_FRONT_A.read_bytes()
    cut = tmp_path / 'cut.jpg'
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match='cut.jpg'):
        LoadMultiViewImages()(_image_results([cut]))
    small = tmp_path / 'small.png'
    cv2.imwrite(str(small), np.zeros((10, 20, 3), np.uint8))
    with pytest.raises(ValueError, match='differ in size'):
        LoadMultiViewImages()(_image_results([CAM_FRONT_A, small]))
    with pytest.raises(KeyError, match='CAM_1'):
        results = _image_results([CAM_FRONT_A, CAM_FRONT_A])
        del results['images']['CAM_1']
        LoadMultiViewImages()(results)


def _blob_image(h, w, uv, sigma=1.6):
    vv, uu = np.mgrid[0:h, 0:w]
    blob = np.exp(-((uu - uv[0])**2 + (vv - uv[1])**2) / (2 * sigma**2))
    return np.repeat((blob * 250)[..., None], 3, axis=2).astype(np.uint8)


def _find_blob(img):
    gray = img[..., 0].astype(np.float64)
    v, u = np.unravel_index(np.argmax(gray), gray.shape)
    v0, v1 = max(0, v - 4), min(gray.shape[0], v + 5)
    u0, u1 = max(0, u - 4), min(gray.shape[1], u + 5)
    win = gray[v0:v1, u0:u1]
    vv, uu = np.mgrid[v0:v1, u0:u1]
    return np.array([(win * uu).sum(), (win * vv).sum()]) / win.sum()


def test_image_aug_matrix_tracks_projected_point():
    """A LiDAR point drawn as a dot moves where img_aug_matrix says."""
    h, w = 90, 160
    cam2img = np.array([[100.0, 0, 81.3, 0], [0, 100.0, 40.7, 0], [0, 0, 1, 0],
                        [0, 0, 0, 1]])
    lidar2cam = np.array([[0.0, -1, 0, 0], [0, 0, -1, 0.3], [1, 0, 0, -0.5],
                          [0, 0, 0, 1]])  # lidar x forward = cam z
    point_lidar = np.array([12.0, -1.5, 0.8, 1.0])
    q = cam2img @ lidar2cam @ point_lidar
    uvd = np.array([q[0] / q[2], q[1] / q[2], q[2], 1.0])
    image = _blob_image(h, w, uvd[:2])
    aug = ImageAug3D(final_dim=(64, 120),
                     resize_lim=(0.7, 1.3),
                     bot_pct_lim=(0.0, 0.2),
                     rot_lim=(-25.0, 25.0),
                     rand_flip=True,
                     is_train=True)
    checked, flips = 0, set()
    for seed in range(25):
        np.random.seed(seed)
        out = aug(dict(img=[image.copy()]))
        mat = out['img_aug_matrix'][0]
        assert out['img'][0].shape == (64, 120, 3)
        pred = mat @ uvd
        assert pred[2] == pytest.approx(uvd[2])  # depth passes through
        flips.add(bool(mat[0, 0] * mat[1, 1] - mat[0, 1] * mat[1, 0] < 0))
        if 4 <= pred[0] <= 115 and 4 <= pred[1] <= 59:
            found = _find_blob(out['img'][0])
            np.testing.assert_allclose(found, pred[:2], atol=0.15)
            checked += 1
        elif pred[0] < -4 or pred[0] > 124 or pred[1] < -4 or pred[1] > 68:
            assert out['img'][0].max() < 60  # the dot left the image
    assert checked >= 10 and flips == {True, False}


def test_image_aug_flip_and_rotation_conventions():
    """flip = mirror left-right; +90 deg = counter-clockwise on screen."""
    img = np.arange(5 * 5 * 3, dtype=np.uint8).reshape(5, 5, 3)
    aug = ImageAug3D(final_dim=(5, 5), resize_lim=(1.0, 1.0))
    base = dict(resized_hw=(5, 5), crop_xy=(0, 0))
    out, affine = aug.augment_image(img, dict(base, flip=True, rotate=0.0))
    np.testing.assert_array_equal(out, img[:, ::-1])
    np.testing.assert_allclose(affine, [[-1, 0, 4], [0, 1, 0]], atol=1e-12)
    out, affine = aug.augment_image(img, dict(base, flip=False, rotate=90.0))
    np.testing.assert_array_equal(out, np.rot90(img, k=1, axes=(0, 1)))
    # the top-right pixel (u=4, v=0) moves to the top-left (u=0, v=0)
    np.testing.assert_allclose(affine @ [4, 0, 1], [0, 0], atol=1e-9)


def test_image_aug_test_mode_and_composition():
    img = np.zeros((90, 160, 3), np.uint8)
    prev = np.tile(np.eye(4), (2, 1, 1))
    prev[:, 0, 3] = 5.0
    aug = ImageAug3D(final_dim=(40, 70),
                     resize_lim=(0.5, 0.5),
                     bot_pct_lim=(0.1, 0.1),
                     is_train=False)
    out = aug(dict(img=[img, img], img_aug_matrix=prev))
    # resize 160x90 -> 80x45: u' = 0.5 u - 0.25; crop x = (80-70)//2 = 5,
    # crop y = int(0.9 * 45) - 40 = 0
    step = np.eye(4)
    step[0, 0] = step[1, 1] = 0.5
    step[0, 3], step[1, 3] = -0.25 - 5, -0.25
    np.testing.assert_allclose(out['img_aug_matrix'][1], step @ prev[1])
    assert out['img_shape'] == (40, 70)


# --------------------------------------------------------------- BEV aug
def test_warp_bev_masks_rotation_and_flip_hand_computed():
    grid = BEVGrid((-3.0, 5.0), (-2.0, 2.0), 1.0)  # Y=4, X=8
    masks = np.zeros((1, 4, 8), dtype=bool)
    iy, ix = grid.cell_index(np.array([3.5]), np.array([0.5]))
    masks[0, iy[0], ix[0]] = True  # cell centred at (x=3.5, y=0.5)
    # +90 deg about z: (3.5, 0.5) -> (-0.5, 3.5): outside y range -> gone
    rot90 = BEVGlobalRotScaleTrans.matrix(np.pi / 2, 1.0, (0, 0, 0))
    assert not warp_bev_masks(masks, grid, rot90).any()
    # 180 deg: (3.5, 0.5) -> (-3.5, -0.5): outside x range (x >= -3) -> gone
    rot180 = BEVGlobalRotScaleTrans.matrix(np.pi, 1.0, (0, 0, 0))
    assert not warp_bev_masks(masks, grid, rot180).any()
    # y flip: (3.5, 0.5) -> (3.5, -0.5) = row 1, column 6
    out = warp_bev_masks(masks, grid, BEVRandomFlip3D.matrix('horizontal'))
    assert np.argwhere(out[0]).tolist() == [[1, 6]]
    # translate by (-1, +1): -> (2.5, 1.5) = row 3, column 5
    shift = BEVGlobalRotScaleTrans.matrix(0.0, 1.0, (-1.0, 1.0, 0.0))
    out = warp_bev_masks(masks, grid, shift)
    assert np.argwhere(out[0]).tolist() == [[3, 5]]
    # -90 deg about z: (x, y) -> (y, -x); new cell (0.5, -3.5) is outside,
    # but the cell at (0.5, -1.5) comes from (1.5, 0.5)
    masks2 = np.zeros((1, 4, 8), dtype=bool)
    masks2[0, 2, 4] = True  # centre (1.5, 0.5)
    rotm90 = BEVGlobalRotScaleTrans.matrix(-np.pi / 2, 1.0, (0, 0, 0))
    assert np.argwhere(warp_bev_masks(masks2, grid,
                                      rotm90)[0]).tolist() == [[0, 3]]


def _toy_scene():
    points = LiDARPoints(torch.tensor([[10.0, 2.0, -1.0, 0.3, 0.0],
                                       [-4.0, 6.0, 0.5, 0.1, 0.0]]),
                         points_dim=5)
    boxes = LiDARInstance3DBoxes(torch.tensor(
        [[10.0, 2.0, -1.5, 4.0, 2.0, 1.5, 0.3, 3.0, -1.0]]),
                                 box_dim=9)
    return dict(points=points, gt_bboxes_3d=boxes)


def test_global_rot_scale_trans_matches_matrix():
    results = _toy_scene()
    orig_pts = results['points'].tensor.clone()
    orig_box = results['gt_bboxes_3d'].tensor.clone()
    aug = BEVGlobalRotScaleTrans()
    out = aug.apply(results, 0.4, 1.1, np.array([1.0, -2.0, 0.5]))
    mat = out['lidar_aug_matrix']
    c, s = np.cos(0.4), np.sin(0.4)
    np.testing.assert_allclose(
        mat[:3, :3], 1.1 * np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]))
    expect = orig_pts[:, :3].double() @ torch.tensor(mat[:3, :3]).T + \
        torch.tensor(mat[:3, 3])
    np.testing.assert_allclose(out['points'].tensor[:, :3], expect, atol=1e-5)
    np.testing.assert_allclose(out['points'].tensor[:, 3:], orig_pts[:, 3:])
    box = out['gt_bboxes_3d'].tensor[0].double()
    centre = mat[:3, :3] @ orig_box[0, :3].double().numpy() + mat[:3, 3]
    np.testing.assert_allclose(box[:3], centre, atol=1e-5)
    np.testing.assert_allclose(box[3:6], orig_box[0, 3:6] * 1.1, atol=1e-5)
    assert box[6] == pytest.approx(0.3 + 0.4, abs=1e-6)
    vel = mat[:2, :2] @ orig_box[0, 7:9].double().numpy()
    np.testing.assert_allclose(box[7:9], vel, atol=1e-5)


@pytest.mark.parametrize('horizontal,vertical', [(True, False), (False, True),
                                                 (True, True)])
def test_flip_matches_matrix(horizontal, vertical):
    results = _toy_scene()
    orig_box = results['gt_bboxes_3d'].tensor.clone()
    out = BEVRandomFlip3D().apply(results, horizontal, vertical)
    diag = np.diag(out['lidar_aug_matrix'])
    assert diag.tolist() == [
        -1.0 if vertical else 1.0, -1.0 if horizontal else 1.0, 1.0, 1.0
    ]
    box = out['gt_bboxes_3d'].tensor[0].double().numpy()
    np.testing.assert_allclose(box[:2], diag[:2] * orig_box[0, :2].numpy())
    np.testing.assert_allclose(box[7:9], diag[:2] * orig_box[0, 7:9].numpy())
    heading = diag[:2] * [np.cos(0.3), np.sin(0.3)]  # heading = M @ heading
    np.testing.assert_allclose([np.cos(box[6]), np.sin(box[6])],
                               heading,
                               atol=1e-6)


def test_bev_aug_needs_grid_for_masks():
    results = _toy_scene()
    results['gt_masks_bev'] = np.zeros((6, 4, 4), bool)
    with pytest.raises(KeyError, match='bev_mask_grid'):
        BEVRandomFlip3D().apply(results, True, False)


# ---------------------------------------------------------------- packing
def test_pack_multitask_inputs():
    results = _toy_scene()
    results.update(img=[np.zeros((8, 12, 3), np.uint8)] * 2,
                   gt_labels_3d=np.array([3]),
                   gt_masks_bev=np.eye(5, 7, dtype=bool)[None].repeat(6, 0),
                   cam2img=np.tile(np.eye(4), (2, 1, 1)),
                   lidar2cam=np.tile(np.eye(4), (2, 1, 1)),
                   lidar2img=np.tile(np.eye(4), (2, 1, 1)),
                   token='tok',
                   sample_idx=0,
                   location='boston-seaport')
    pack = PackMultiTaskInputs(keys=('points', 'img', 'gt_bboxes_3d',
                                     'gt_labels_3d', 'gt_masks_bev'))
    out = pack(results)
    assert out['inputs']['img'].shape == (2, 3, 8, 12)
    assert out['inputs']['points'].shape == (2, 5)
    sample = out['data_samples']
    assert sample.gt_masks_bev.dtype == torch.bool
    assert sample.gt_masks_bev.shape == (6, 5, 7)
    assert sample.gt_masks_bev[0, 2, 2] and not sample.gt_masks_bev[0, 2, 3]
    assert isinstance(sample.gt_instances_3d.bboxes_3d, LiDARInstance3DBoxes)
    assert sample.gt_instances_3d.labels_3d.tolist() == [3]
    meta = sample.metainfo
    assert meta['token'] == 'tok' and meta['location'] == 'boston-seaport'
    assert meta['lidar2img'].shape == (2, 4, 4)
    assert meta['lidar2img'].dtype == np.float32
    np.testing.assert_array_equal(meta['img_aug_matrix'],
                                  np.tile(np.eye(4), (2, 1, 1)))
    np.testing.assert_array_equal(meta['lidar_aug_matrix'], np.eye(4))


def test_sweeps_of_generated_dataroot_land_on_static_boxes(tmp_path):
    """fuller's info writer and LoadNuScenesPoints agree on lidar2sensor:
    sweep points of parked objects fall into their keyframe boxes."""
    from mmcv.ops import points_in_boxes_cpu

    from fuller.data_prep import nuscenes_infos as ni
    from fuller.data_prep.synthetic import generate_synthetic_nuscenes
    from fuller.datasets.nuscenes_multitask_dataset import \
        NuScenesMultiTaskDataset
    root, out = str(tmp_path / 'nus'), str(tmp_path / 'out')
    generate_synthetic_nuscenes(root,
                                num_scenes=1,
                                keyframes_per_scene=3,
                                image_size=(160, 90),
                                seed=0,
                                lidar_azimuths=512)
    # one scene: the val split is empty, which the writer says
    with pytest.warns(UserWarning, match="split 'val' has no samples"):
        paths = ni.create_nuscenes_data(root,
                                        out,
                                        'v1.0-mini',
                                        max_sweeps=4,
                                        skip_map_masks=True,
                                        progress=False)
    ds = NuScenesMultiTaskDataset(data_root=root,
                                  ann_file=paths['train'],
                                  data_prefix=ni.DATA_PREFIX,
                                  with_map=False)
    info = ds.get_data_info(1)  # has 4 earlier sweeps
    assert len(info['lidar_sweeps']) == 4
    boxes = info['ann_info']['gt_bboxes_3d']
    static = boxes.tensor[:, 7:9].norm(dim=1) < 0.05
    assert static.sum() >= 5
    grown = boxes.tensor[static, :7].clone()
    grown[:, 3:6] += 0.2

    def count(xyz):
        inside = points_in_boxes_cpu(xyz[None, :, :3].float(), grown[None])
        return int(inside.sum())

    loader = LoadNuScenesPoints(sweeps_num=1,
                                test_mode=True,
                                remove_close_radius=0.0)
    base = dict(lidar_path=info['lidar_path'], timestamp=info['timestamp'])
    key_count = count(LoadNuScenesPoints()(dict(base))['points'].tensor)
    for sweep in info['lidar_sweeps'][1:]:  # 0.2 s and more before
        pts = loader(dict(base, lidar_sweeps=[sweep]))['points'].tensor
        sweep_pts = pts[pts[:, 4] > 0]
        raw = load_points(sweep['lidar_points']['lidar_path'])
        key2sweep = torch.tensor(sweep['lidar_points']['lidar2sensor'])
        inverted = raw[:, :3] @ key2sweep[:3, :3].T.numpy() + \
            key2sweep[:3, 3].numpy()
        assert count(sweep_pts) > 0.8 * key_count
        assert count(torch.from_numpy(inverted)) < 0.5 * count(sweep_pts)
