"""Info pkls: schema against a real mmdet3d v2 info, a devkit round trip,
points inside their boxes, mmdet3d's NuScenesDataset loading them, and the
calibration of a real keyframe from its real tables."""
import json
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
from pyquaternion import Quaternion

from fuller.data_prep import nuscenes_infos as ni
from fuller.testing import SHARED_REAL

REAL = SHARED_REAL
REF_INFO = REAL / 'infos' / 'sample_a_infos_v2.pkl'
FULLER_KEYS = {'location', 'scene_token', 'map_mask_path'}


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """A generated v1.0-mini dataroot (2 scenes) and its infos + masks."""
    from fuller.data_prep.synthetic import generate_synthetic_nuscenes
    from nuscenes.nuscenes import NuScenes
    base = tmp_path_factory.mktemp('nus_infos')
    root, out = str(base / 'nuscenes'), str(base / 'out')
    generate_synthetic_nuscenes(root, num_scenes=2, keyframes_per_scene=3,
                                image_size=(160, 90), seed=0,
                                lidar_azimuths=512)
    paths = ni.create_nuscenes_data(root, out, 'v1.0-mini', max_sweeps=3,
                                    progress=False)
    infos = {}
    for split, path in paths.items():
        with open(path, 'rb') as f:
            infos[split] = pickle.load(f)
    nusc = NuScenes('v1.0-mini', root, verbose=False)
    return dict(root=root, out=out, paths=paths, infos=infos, nusc=nusc)


def all_entries(dataset):
    return [e for pkl in dataset['infos'].values() for e in pkl['data_list']]


def matrix(record):
    from nuscenes.utils.geometry_utils import transform_matrix
    return transform_matrix(record['translation'],
                            Quaternion(record['rotation']))


@pytest.mark.usefixtures('real_nuscenes_root')
def test_schema_matches_real_mmdet3d_info(dataset):
    with open(REF_INFO, 'rb') as f:
        ref = pickle.load(f)
    ref_entry = ref['data_list'][0]
    assert set(dataset['paths']) == {'train', 'val'}
    for pkl in dataset['infos'].values():
        assert pkl['metainfo'] == ref['metainfo']  # both v1.0-mini
        for i, entry in enumerate(pkl['data_list']):
            assert entry['sample_idx'] == i
            assert set(entry) - {'lidar_sweeps'} == (
                set(ref_entry) - {'cam_instances'} | FULLER_KEYS)
            assert set(entry['lidar_points']) == set(ref_entry['lidar_points'])
            assert entry['lidar_points']['num_pts_feats'] == 5
            assert list(entry['images']) == list(ref_entry['images'])
            for cam, img in entry['images'].items():
                assert set(img) == set(ref_entry['images'][cam])
                assert np.shape(img['cam2img']) == (3, 3)
                assert np.shape(img['lidar2cam']) == (4, 4)
                assert '/' not in img['img_path'] and cam in img['img_path']
            assert '/' not in entry['lidar_points']['lidar_path']
            assert entry['map_mask_path'] == f'map_masks/{entry["token"]}.npz'
            for inst in entry['instances']:
                assert set(inst) == set(ref_entry['instances'][0]) | {
                    'attr_label'}
                assert len(inst['bbox_3d']) == 7 and len(inst['velocity']) == 2


def test_boxes_and_poses_match_devkit(dataset):
    """Each instance == the devkit's get_sample_data box in the lidar
    frame; velocity == box_velocity rotated with the devkit's quaternions."""
    from mmdet3d.datasets.convert_utils import NuScenesNameMapping
    nusc = dataset['nusc']
    entries = all_entries(dataset)
    assert sum(len(e['instances']) for e in entries) > 50
    for entry in entries:
        sample = nusc.get('sample', entry['token'])
        sd = nusc.get('sample_data', sample['data']['LIDAR_TOP'])
        pose = nusc.get('ego_pose', sd['ego_pose_token'])
        calib = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
        np.testing.assert_allclose(entry['ego2global'], matrix(pose),
                                   atol=1e-9)
        np.testing.assert_allclose(entry['lidar_points']['lidar2ego'],
                                   matrix(calib), atol=1e-9)
        assert entry['timestamp'] == sample['timestamp'] / 1e6
        log = nusc.get('log', nusc.get('scene', sample['scene_token'])[
            'log_token'])
        assert entry['location'] == log['location']
        _, boxes, _ = nusc.get_sample_data(sd['token'])
        assert len(boxes) == len(entry['instances'])
        for box, inst in zip(boxes, entry['instances']):
            bbox = np.asarray(inst['bbox_3d'])
            np.testing.assert_allclose(bbox[:3], box.center, atol=1e-6)
            np.testing.assert_allclose(bbox[3:6], box.wlh[[1, 0, 2]])
            dyaw = bbox[6] - box.orientation.yaw_pitch_roll[0]
            assert abs(np.arctan2(np.sin(dyaw), np.cos(dyaw))) < 1e-6
            name = NuScenesNameMapping.get(box.name, box.name)
            classes = ni.DETECTION_CLASSES
            label = classes.index(name) if name in classes else -1
            assert inst['bbox_label'] == inst['bbox_label_3d'] == label
            velo = np.array([*nusc.box_velocity(box.token)[:2], 0.0])
            velo = Quaternion(calib['rotation']).inverse.rotate(
                Quaternion(pose['rotation']).inverse.rotate(velo))
            np.testing.assert_allclose(inst['velocity'], velo[:2], atol=1e-6)
            ann = nusc.get('sample_annotation', box.token)
            assert inst['num_lidar_pts'] == ann['num_lidar_pts']
            assert inst['bbox_3d_isvalid'] == (
                ann['num_lidar_pts'] + ann['num_radar_pts'] > 0)
            attr = (nusc.get('attribute', ann['attribute_tokens'][0])['name']
                    if ann['attribute_tokens'] else 'None')
            assert ni.NUS_ATTRIBUTES[inst['attr_label']] == attr


def test_camera_matrices_match_devkit_camera_boxes(dataset):
    """lidar2cam maps each box centre to the devkit's camera-frame box."""
    from nuscenes.utils.geometry_utils import BoxVisibility
    nusc = dataset['nusc']
    for entry in all_entries(dataset)[:2]:
        sample = nusc.get('sample', entry['token'])
        centres = np.array([i['bbox_3d'][:3] for i in entry['instances']])
        for cam, img in entry['images'].items():
            path, cam_boxes, intrinsic = nusc.get_sample_data(
                sample['data'][cam], box_vis_level=BoxVisibility.NONE)
            assert osp.basename(path) == img['img_path']
            np.testing.assert_allclose(img['cam2img'], intrinsic)
            lidar2cam = np.asarray(img['lidar2cam'])
            got = centres @ lidar2cam[:3, :3].T + lidar2cam[:3, 3]
            np.testing.assert_allclose(
                got, [b.center for b in cam_boxes], atol=1e-6)


def test_sweeps_follow_mmdet3d_convention(dataset):
    """lidar2sensor = keyframe lidar -> sweep lidar, the inverse of the
    devkit's from_file_multisweep chain; paths resolve under the dataroot."""
    nusc, root = dataset['nusc'], dataset['root']
    checked = 0
    for entry in all_entries(dataset):
        sample = nusc.get('sample', entry['token'])
        ref_sd = nusc.get('sample_data', sample['data']['LIDAR_TOP'])
        ref_from_global = np.linalg.inv(
            matrix(nusc.get('ego_pose', ref_sd['ego_pose_token']))
            @ matrix(nusc.get('calibrated_sensor',
                              ref_sd['calibrated_sensor_token'])))
        sweeps = entry.get('lidar_sweeps', [])
        assert len(sweeps) <= 3
        prev_ts = entry['timestamp']
        for sweep in sweeps:
            sd = nusc.get('sample_data', sweep['sample_data_token'])
            pose = nusc.get('ego_pose', sd['ego_pose_token'])
            calib = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
            current2global = matrix(pose) @ matrix(calib)
            np.testing.assert_allclose(
                np.linalg.inv(sweep['lidar_points']['lidar2sensor']),
                ref_from_global @ current2global, atol=1e-9)
            assert sweep['timestamp'] < prev_ts
            prev_ts = sweep['timestamp']
            assert sweep['lidar_points']['lidar_path'] == sd['filename']
            assert osp.isfile(osp.join(root, sd['filename']))
            checked += 1
    assert checked > 0


def test_points_of_boxes_lie_inside_their_bbox_3d(dataset):
    """mmdet3d's box convention (gravity centre in the info, bottom centre
    after origin=(0.5, 0.5, 0.5)) holds the LiDAR returns of each box.

    The devkit counts ``num_lidar_pts`` in the full 3D box, whose roll and
    pitch in the lidar frame (the LiDAR's mounting tilt) a yaw-only
    LiDARInstance3DBoxes drops; the boxes are grown by the most that tilt
    can move a box point (far less than the h/2 of a centre mix-up).
    """
    from mmcv.ops import points_in_boxes_cpu
    from mmdet3d.structures import LiDARInstance3DBoxes
    checked = 0
    for entry in all_entries(dataset):
        path = osp.join(dataset['root'], 'samples', 'LIDAR_TOP',
                        entry['lidar_points']['lidar_path'])
        points = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
        dense = [i for i in entry['instances'] if i['num_lidar_pts'] >= 10]
        if not dense:
            continue
        lidar2global = np.asarray(entry['ego2global']) @ np.asarray(
            entry['lidar_points']['lidar2ego'])
        sin_tilt = np.sqrt(1.0 - lidar2global[2, 2]**2)
        boxes = np.array([i['bbox_3d'] for i in dense])
        half_diag = 0.5 * np.hypot(boxes[:, 3], boxes[:, 4])
        boxes[:, 3:5] += 2 * (sin_tilt * boxes[:, 5:6] / 2 + 2e-3)
        boxes[:, 5] += 2 * (sin_tilt * half_diag + 2e-3)
        boxes = LiDARInstance3DBoxes(torch.from_numpy(boxes).float(),
                                     origin=(0.5, 0.5, 0.5))
        inside = points_in_boxes_cpu(
            torch.from_numpy(points[None, :, :3]).contiguous(),
            boxes.tensor[None].contiguous())[0]  # (P, T)
        counts = inside.sum(0).numpy()
        expected = np.array([i['num_lidar_pts'] for i in dense])
        assert (counts >= expected).all(), (counts, expected)
        assert (counts <= 1.2 * expected + 5).all(), (counts, expected)
        checked += len(dense)
    assert checked >= 5


def test_mmdet3d_nuscenes_dataset_loads_infos(dataset):
    from mmdet3d.datasets import NuScenesDataset
    from mmdet3d.datasets.transforms import (LoadAnnotations3D,
                                             LoadPointsFromFile,
                                             LoadPointsFromMultiSweeps,
                                             Pack3DDetInputs)
    pipeline = [
        LoadPointsFromFile(coord_type='LIDAR', load_dim=5, use_dim=5),
        LoadPointsFromMultiSweeps(sweeps_num=9, use_dim=[0, 1, 2, 3, 4],
                                  pad_empty_sweeps=True, remove_close=True,
                                  test_mode=True),
        LoadAnnotations3D(with_bbox_3d=True, with_label_3d=True),
        Pack3DDetInputs(keys=['points', 'gt_bboxes_3d', 'gt_labels_3d'])
    ]
    ds = NuScenesDataset(data_root=dataset['root'],
                         ann_file=dataset['paths']['train'],
                         data_prefix=ni.DATA_PREFIX, pipeline=pipeline,
                         modality=dict(use_lidar=True, use_camera=True))
    entries = dataset['infos']['train']['data_list']
    assert len(ds) == len(entries)
    for idx, entry in enumerate(entries):
        info = ds.get_data_info(idx)
        assert osp.isfile(info['lidar_points']['lidar_path'])
        for sweep in info.get('lidar_sweeps', []):
            assert osp.isfile(sweep['lidar_points']['lidar_path'])
        for img in info['images'].values():
            assert osp.isfile(img['img_path'])
        gt = info['ann_info']['gt_bboxes_3d']
        kept = [i for i in entry['instances'] if i['num_lidar_pts'] > 0]
        want = np.array([i['bbox_3d'] for i in kept])
        want[:, 2] -= want[:, 5] / 2  # gravity -> bottom centre
        np.testing.assert_allclose(gt.tensor[:, :7].numpy(), want, atol=1e-4)
    packed = ds[0]
    points = packed['inputs']['points']
    assert points.shape[1] == 5 and points.shape[0] > 1000
    gt = packed['data_samples'].gt_instances_3d
    kept = [i for i in entries[0]['instances'] if i['num_lidar_pts'] > 0]
    assert gt.labels_3d.tolist() == [i['bbox_label_3d'] for i in kept]


def test_fuller_dataset_accepts_infos_and_masks(dataset):
    from fuller.datasets.nuscenes_multitask_dataset import \
        NuScenesMultiTaskDataset
    ds = NuScenesMultiTaskDataset(
        data_root=dataset['root'], ann_file=dataset['paths']['val'],
        data_prefix=dict(ni.DATA_PREFIX, map_mask_root=dataset['out']),
        pipeline=[], modality=dict(use_lidar=True, use_camera=True))
    info = ds.get_data_info(0)
    assert osp.isfile(info['map_mask_path'])
    assert info['location'] == dataset['infos']['val']['data_list'][0][
        'location']


def _real_tables():
    tables = {}
    for path in (REAL / 'tables-sample-a').glob('*.json'):
        with open(path) as f:
            tables[path.stem] = {r['token']: r for r in json.load(f)}
    return tables


@pytest.mark.usefixtures('real_nuscenes_root')
def test_real_sample_a_calibration_matches_mmdet3d_info():
    """Our camera and LiDAR matrices for a real keyframe, from its real
    tables, equal those of mmdet3d's converter (sample_a_infos_v2.pkl)."""
    tables = _real_tables()

    def get(table, token):
        return tables[table][token]

    (sample, ) = tables['sample'].values()
    sample = dict(sample, data={})
    for sd in tables['sample_data'].values():
        sensor = get('sensor', get('calibrated_sensor',
                                   sd['calibrated_sensor_token'])[
                                       'sensor_token'])
        sample['data'][sensor['channel']] = sd['token']
    with open(REF_INFO, 'rb') as f:
        ref = pickle.load(f)['data_list'][0]
    lidar_sd, lidar2ego, ego2global = ni.sample_data_poses(
        get, sample['data']['LIDAR_TOP'])
    np.testing.assert_allclose(lidar2ego, ref['lidar_points']['lidar2ego'],
                               atol=1e-6)
    np.testing.assert_allclose(ego2global, ref['ego2global'], atol=1e-4)
    assert osp.basename(lidar_sd['filename']) == ref['lidar_points'][
        'lidar_path']
    images = ni.camera_infos(get, sample, ego2global @ lidar2ego)
    assert list(images) == list(ref['images'])
    for cam, img in images.items():
        want = ref['images'][cam]
        for key in ('lidar2cam', 'cam2img', 'cam2ego'):
            np.testing.assert_allclose(img[key], want[key], atol=1e-6,
                                       err_msg=f'{cam} {key}')
        assert img['img_path'] == want['img_path']
        assert img['sample_data_token'] == want['sample_data_token']
        assert img['timestamp'] == pytest.approx(want['timestamp'], abs=1e-6)
