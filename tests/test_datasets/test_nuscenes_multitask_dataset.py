"""NuScenesMultiTaskDataset on the real Sample A info (mmdet3d v2 schema).

The info file and the sensor files are read from shared/; modified infos and
map masks are written to tmp_path only.
"""
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.registry import init_default_scope

from fuller.datasets.map_mask_io import MAP_CLASSES, save_map_masks
from fuller.datasets.nuscenes_multitask_dataset import (
    InfoSchemaError, NuScenesMultiTaskDataset)
from fuller.datasets.transforms.loading import CAMERAS
from fuller.testing import SHARED_REAL

REAL = SHARED_REAL
# every test here reads the real frames: skipped (or failed in CI) without them
pytestmark = pytest.mark.usefixtures('real_nuscenes_root')
INFO_A = REAL / 'infos' / 'sample_a_infos_v2.pkl'
TOKEN_A = 'ca9a282c9e77460f8360f564131a8af5'
DATA_PREFIX = dict(pts='samples/LIDAR_TOP',
                   sweeps='samples/LIDAR_TOP',
                   **{c: f'samples/{c}'
                      for c in CAMERAS})


@pytest.fixture(autouse=True, scope='module')
def mmdet3d_scope():
    """Pipelines are built from type names, as configs do."""
    init_default_scope('mmdet3d')


def raw_info():
    with open(INFO_A, 'rb') as f:
        return pickle.load(f)


def write_info(tmp_path, edit=None, name='infos.pkl'):
    """A copy of Sample A's info file, changed by ``edit(entry)``."""
    data = raw_info()
    if edit is not None:
        edit(data['data_list'][0])
    path = tmp_path / name
    with open(path, 'wb') as f:
        pickle.dump(data, f)
    return str(path)


def add_map_fields(entry):
    entry['location'] = 'singapore-onenorth'
    entry['map_mask_path'] = f'map_masks/{entry["token"]}.npz'


def build(ann_file=str(INFO_A), **kwargs):
    cfg = dict(data_root=str(REAL),
               ann_file=ann_file,
               data_prefix=dict(DATA_PREFIX),
               with_map=False)
    cfg.update(kwargs)
    return NuScenesMultiTaskDataset(**cfg)


def test_camera_matrices_and_frames():
    info = build().get_data_info(0)
    raw = raw_info()['data_list'][0]
    assert info['token'] == TOKEN_A
    assert info['cam_names'] == list(CAMERAS)
    for key in ('cam2img', 'lidar2cam', 'lidar2img', 'cam2ego'):
        assert info[key].shape == (6, 4, 4), key
    for i, cam in enumerate(CAMERAS):
        k = np.eye(4)
        k[:3, :3] = raw['images'][cam]['cam2img']
        np.testing.assert_allclose(info['cam2img'][i], k)
        l2c = np.asarray(raw['images'][cam]['lidar2cam'])
        np.testing.assert_allclose(info['lidar2img'][i], k @ l2c)
        np.testing.assert_allclose(info['cam2ego'][i],
                                   raw['images'][cam]['cam2ego'])
        assert Path(info['img_path'][i]).is_file()
        assert info['img_path'][i].endswith(raw['images'][cam]['img_path'])
        assert f'/samples/{cam}/' in info['img_path'][i]
    np.testing.assert_allclose(info['lidar2ego'],
                               raw['lidar_points']['lidar2ego'])
    np.testing.assert_allclose(info['ego2global'], raw['ego2global'])
    assert Path(info['lidar_path']).is_file()


def test_gt_boxes_bottom_centre_with_velocity():
    ds = build()
    ann = ds.get_data_info(0)['ann_info']
    raw = raw_info()['data_list'][0]['instances']
    # mmdet3d keeps boxes with points, -1 labels included (the pipeline's
    # ObjectNameFilter drops those)
    kept = [r for r in raw if r['num_lidar_pts'] > 0]
    assert -1 in [r['bbox_label_3d'] for r in kept]
    boxes = ann['gt_bboxes_3d']
    assert isinstance(boxes, LiDARInstance3DBoxes)
    assert boxes.tensor.shape == (len(kept), 9)
    expect = np.array([r['bbox_3d'] for r in kept])
    np.testing.assert_allclose(boxes.tensor[:, :2], expect[:, :2], atol=1e-4)
    # info z is the gravity centre; the boxes hold the bottom centre
    np.testing.assert_allclose(boxes.tensor[:, 2],
                               expect[:, 2] - expect[:, 5] / 2,
                               atol=1e-4)
    np.testing.assert_allclose(boxes.gravity_center[:, 2],
                               expect[:, 2],
                               atol=1e-4)
    vel = np.nan_to_num(np.array([r['velocity'] for r in kept]))
    np.testing.assert_allclose(boxes.tensor[:, 7:9], vel, atol=1e-5)
    assert ann['gt_labels_3d'].tolist() == [r['bbox_label_3d'] for r in kept]


def test_schema_errors_name_file_and_fix(tmp_path):
    no_images = write_info(tmp_path, lambda e: e.pop('images'), 'a.pkl')
    with pytest.raises(InfoSchemaError) as err:
        build(no_images)
    msg = str(err.value)
    assert 'a.pkl' in msg and "'images'" in msg
    assert 'python tools/create_data.py nuscenes' in msg
    # camera off: images are not needed
    assert build(
        no_images,
        modality=dict(use_camera=False)).get_data_info(0)['token'] == TOKEN_A
    with pytest.raises(InfoSchemaError, match='map_mask_path'):
        build(with_map=True)  # the real info has no map fields
    with pytest.raises(InfoSchemaError, match='location'):
        build(with_map=True)
    one_cam = write_info(tmp_path,
                         lambda e: e['images']['CAM_BACK'].pop('cam2ego'),
                         'b.pkl')
    with pytest.raises(InfoSchemaError, match=r'images\.CAM_BACK\.cam2ego'):
        build(one_cam)
    no_lidar = write_info(tmp_path,
                          lambda e: e['lidar_points'].pop('lidar_path'),
                          'e.pkl')
    with pytest.raises(InfoSchemaError, match=r'lidar_points\.lidar_path'):
        build(no_lidar)
    camera_only = build(no_lidar, modality=dict(use_lidar=False))
    assert camera_only.get_data_info(0)['lidar2img'].shape == (6, 4, 4)
    no_inst = write_info(tmp_path, lambda e: e.pop('instances'), 'c.pkl')
    with pytest.raises(InfoSchemaError, match='instances'):
        build(no_inst)
    no_vel = write_info(tmp_path,
                        lambda e: [i.pop('velocity') for i in e['instances']],
                        'd.pkl')
    with pytest.raises(InfoSchemaError, match='velocity'):
        build(no_vel)


def test_test_split_needs_no_ground_truth(tmp_path):

    def strip(entry):
        entry.pop('instances')
        entry.pop('cam_instances')

    path = write_info(tmp_path, strip)
    ds = build(path, test_mode=True, load_eval_anns=False, with_map=True)
    info = ds.get_data_info(0)
    assert 'ann_info' not in info and 'eval_ann_info' not in info
    assert info['lidar2img'].shape == (6, 4, 4)
    # with evaluation annotations requested the same file is rejected
    with pytest.raises(InfoSchemaError, match='instances'):
        build(path, test_mode=True, load_eval_anns=True)


def test_detection_off_accepts_missing_instances(tmp_path):
    path = write_info(tmp_path, lambda e: e.pop('instances'))
    ds = build(path,
               with_det=False,
               filter_empty_gt=True,
               pipeline=[
                   dict(type='LoadNuScenesPoints'),
                   dict(type='PackMultiTaskInputs', keys=['points'])
               ])
    assert len(ds.get_data_info(0)['ann_info']['gt_labels_3d']) == 0
    sample = ds[0]  # not dropped as "empty GT"
    assert sample['inputs']['points'].shape == (34688, 5)


def write_map_info(tmp_path):
    """Info with map fields plus its cached masks in tmp_path."""
    path = write_info(tmp_path, add_map_fields)
    masks = np.zeros((6, 200, 200), dtype=bool)
    masks[0, 120:130, 40:45] = True  # y in [10, 15), x in [-30, -27.5)
    masks[5, 3, 7] = True
    save_map_masks(str(tmp_path / 'map_masks' / f'{TOKEN_A}.npz'), masks)
    return path, masks


def test_map_mask_path_resolution_and_full_pipeline(tmp_path):
    path, masks = write_map_info(tmp_path)
    train_pipeline = [
        dict(type='LoadNuScenesPoints', sweeps_num=9),
        dict(type='LoadMultiViewImages', scale=0.1),
        dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
        dict(type='LoadBEVMapMasks'),
        dict(type='ImageAug3D',
             final_dim=(48, 128),
             resize_lim=(0.9, 1.1),
             bot_pct_lim=(0.0, 0.1),
             rot_lim=(-5.4, 5.4),
             rand_flip=True,
             is_train=True),
        dict(type='BEVGlobalRotScaleTrans',
             rot_range=(0.0, 0.0),
             scale_ratio_range=(1.0, 1.0)),
        dict(type='BEVRandomFlip3D', flip_ratio_bev_horizontal=1.0),
        dict(type='PointsRangeFilter',
             point_cloud_range=[-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]),
        dict(type='ObjectRangeFilter',
             point_cloud_range=[-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]),
        dict(type='ObjectNameFilter',
             classes=list(NuScenesMultiTaskDataset.METAINFO['classes'])),
        dict(type='PackMultiTaskInputs',
             keys=[
                 'points', 'img', 'gt_bboxes_3d', 'gt_labels_3d',
                 'gt_masks_bev'
             ]),
    ]
    ds = build(path,
               with_map=True,
               pipeline=train_pipeline,
               data_prefix=dict(DATA_PREFIX, map_mask_root=str(tmp_path)))
    info = ds.get_data_info(0)
    assert info['map_mask_path'] == str(tmp_path / 'map_masks' /
                                        f'{TOKEN_A}.npz')
    assert info['location'] == 'singapore-onenorth'
    out = ds[0]
    img = out['inputs']['img']
    assert img.shape == (6, 3, 48, 128) and img.dtype == torch.uint8
    assert out['inputs']['points'].shape[1] == 5
    sample = out['data_samples']
    # the y flip maps row iy to 199 - iy; columns stay
    expect = masks[:, ::-1]
    assert torch.equal(sample.gt_masks_bev, torch.from_numpy(expect.copy()))
    meta = sample.metainfo
    np.testing.assert_allclose(meta['lidar_aug_matrix'],
                               np.diag([1.0, -1.0, 1.0, 1.0]),
                               atol=1e-6)
    assert meta['img_aug_matrix'].shape == (6, 4, 4)
    assert meta['cam2img'].shape == (6, 4, 4)
    assert meta['token'] == TOKEN_A
    boxes = sample.gt_instances_3d.bboxes_3d
    assert isinstance(boxes, LiDARInstance3DBoxes) and len(boxes) > 10
    assert (boxes.tensor[:, :2].abs() <= 54).all()


def test_metainfo_and_defaults():
    ds = NuScenesMultiTaskDataset(data_root=str(REAL),
                                  ann_file=str(INFO_A),
                                  lazy_init=True)
    assert ds.metainfo['map_classes'] == MAP_CLASSES
    assert ds.modality == dict(use_camera=True, use_lidar=True)
    assert ds.with_det and ds.with_map and ds.cam_names == CAMERAS
    assert ds.data_prefix['map_mask_root'].rstrip('/') == str(REAL)


def test_test_pipeline_keeps_frames_and_eval_annotations(tmp_path):
    path, masks = write_map_info(tmp_path)
    test_pipeline = [
        dict(type='LoadNuScenesPoints', sweeps_num=9, test_mode=True),
        dict(type='LoadMultiViewImages', scale=0.1),
        dict(type='LoadBEVMapMasks'),
        dict(type='ImageAug3D',
             final_dim=(48, 128),
             resize_lim=(1.0, 1.0),
             bot_pct_lim=(0.0, 0.0),
             is_train=False),
        dict(type='PointsRangeFilter',
             point_cloud_range=[-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]),
        dict(type='PackMultiTaskInputs',
             keys=['points', 'img', 'gt_masks_bev']),
    ]
    ds = build(path,
               with_map=True,
               test_mode=True,
               pipeline=test_pipeline,
               data_prefix=dict(DATA_PREFIX, map_mask_root=str(tmp_path)))
    sample = ds[0]['data_samples']
    assert torch.equal(sample.gt_masks_bev, torch.from_numpy(masks))
    np.testing.assert_array_equal(sample.metainfo['lidar_aug_matrix'],
                                  np.eye(4))
    # 0.1 x load scale, then a centre crop of the 160x90 image to 128x48:
    # x offset (160 - 128) / 2 = 16, y offset int(90) - 48 = 42
    scale = np.diag([0.1, 0.1, 1.0, 1.0])
    scale[:2, 3] = 0.05 - 0.5
    crop = np.eye(4)
    crop[:2, 3] = [-16, -42]
    np.testing.assert_allclose(sample.metainfo['img_aug_matrix'][0],
                               crop @ scale,
                               atol=1e-6)
    raw = raw_info()['data_list'][0]['instances']
    assert len(sample.eval_ann_info['gt_bboxes_3d']) == sum(
        r['num_lidar_pts'] > 0 for r in raw)
