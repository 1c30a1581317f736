"""The synthetic nuScenes dataroot, checked with the nuScenes devkit itself.

One tiny dataset (2 scenes: one mini_train, one mini_val) is generated per
session; every check reads it back through devkit APIs (NuScenes,
NuScenesMap, DetectionEval, points_in_box, view_points) or the real
calibration records in ../shared/nuscenes-real.
"""
import json
import os
import os.path as osp
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from pyquaternion import Quaternion

from fuller.data_prep import splits as fsplits
from fuller.data_prep.synthetic import generate_synthetic_nuscenes
from fuller.data_prep.synthetic.scene import CLASS_SPECS
from fuller.testing import SHARED_REAL, load_script

REPO = Path(__file__).resolve().parents[2]

REAL_TABLES = SHARED_REAL / 'tables-sample-a'
TINY = dict(num_scenes=2, keyframes_per_scene=4, sweeps_per_keyframe=2,
            image_size=(352, 198), seed=3)
CHANNELS = ('LIDAR_TOP', 'CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_BACK_RIGHT',
            'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_FRONT_LEFT')


@pytest.fixture(scope='session')
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic') / 'nuscenes'
    start = time.time()
    summary = generate_synthetic_nuscenes(str(root), **TINY)
    summary['wall'] = time.time() - start
    from nuscenes import NuScenes
    nusc = NuScenes('v1.0-mini', str(root), verbose=False)
    return root, summary, nusc


def _lidar_points_global(nusc, sd_token):
    from nuscenes.utils.data_classes import LidarPointCloud
    sd = nusc.get('sample_data', sd_token)
    pc = LidarPointCloud.from_file(nusc.get_sample_data_path(sd_token))
    cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
    pose = nusc.get('ego_pose', sd['ego_pose_token'])
    pc.rotate(Quaternion(cs['rotation']).rotation_matrix)
    pc.translate(np.array(cs['translation']))
    pc.rotate(Quaternion(pose['rotation']).rotation_matrix)
    pc.translate(np.array(pose['translation']))
    return pc.points


def test_layout_and_summary(synthetic):
    root, summary, nusc = synthetic
    assert summary['wall'] < 30, 'tiny config must stay fast'
    for sub in ('v1.0-mini', 'samples/LIDAR_TOP', 'sweeps/LIDAR_TOP',
                'samples/CAM_BACK_LEFT', 'maps/expansion'):
        assert (root / sub).is_dir(), sub
    assert not [p for p in os.listdir(root.parent) if '.tmp' in p]
    names = [s['name'] for s in nusc.scene]
    assert names == ['scene-0061', 'scene-0103']
    assert fsplits.split_of_scenes('v1.0-mini', names) == dict(
        train=['scene-0061'], val=['scene-0103'])
    assert summary['num_records']['sample'] == len(nusc.sample) == 8
    # 4 keyframes x 7 channels + 3 gaps x 2 sweeps per scene
    assert len(nusc.sample_data) == 2 * (4 * 7 + 3 * 2)
    for sd in nusc.sample_data:
        path = nusc.get_sample_data_path(sd['token'])
        if sd['fileformat'] == 'pcd':
            pts = np.fromfile(path, np.float32)
            assert pts.size % 5 == 0 and pts.size > 5 * 5000
            pts = pts.reshape(-1, 5)
            assert set(np.unique(pts[:, 4])) <= set(range(32))
            assert pts[:, 3].min() >= 0 and pts[:, 3].max() <= 255
        else:
            img = cv2.imread(path)
            assert img.shape == (198, 352, 3)


def test_sample_and_sweep_chains(synthetic):
    _, _, nusc = synthetic
    for scene in nusc.scene:
        tokens, tok = [], scene['first_sample_token']
        while tok:
            tokens.append(tok)
            tok = nusc.get('sample', tok)['next']
        assert len(tokens) == scene['nbr_samples'] == 4
        assert tokens[-1] == scene['last_sample_token']
        stamps = [nusc.get('sample', t)['timestamp'] for t in tokens]
        assert np.all(np.diff(stamps) == 500_000)
        for i, t in enumerate(tokens):
            sample = nusc.get('sample', t)
            assert sample['prev'] == (tokens[i - 1] if i else '')
            assert set(sample['data']) == set(CHANNELS)
            for ch, sd_tok in sample['data'].items():
                sd = nusc.get('sample_data', sd_tok)
                assert sd['is_key_frame'] and sd['sample_token'] == t
                assert abs(sd['timestamp'] - sample['timestamp']) < 50_000
        # LIDAR_TOP: keyframe, 2 sweeps, keyframe, ... (10/3 Hz here)
        sd = nusc.get('sample_data', nusc.get('sample', tokens[0])['data'][
            'LIDAR_TOP'])
        assert sd['prev'] == ''
        chain = [sd]
        while chain[-1]['next']:
            nxt = nusc.get('sample_data', chain[-1]['next'])
            assert nxt['prev'] == chain[-1]['token']
            chain.append(nxt)
        assert [c['is_key_frame'] for c in chain] == \
            [True, False, False] * 3 + [True]
        assert np.all(np.diff([c['timestamp'] for c in chain]) > 0)
        for c in chain:
            if not c['is_key_frame']:  # devkit: sweeps belong to the next sample
                assert c['filename'].startswith('sweeps/LIDAR_TOP/')
                sample = nusc.get('sample', c['sample_token'])
                assert sample['timestamp'] > c['timestamp']
                prev = nusc.get('sample', sample['prev'])
                assert prev['timestamp'] < c['timestamp']


def test_annotation_chains_and_attributes(synthetic):
    _, _, nusc = synthetic
    for inst in nusc.instance:
        anns, tok = [], inst['first_annotation_token']
        while tok:
            anns.append(nusc.get('sample_annotation', tok))
            tok = anns[-1]['next']
        assert len(anns) == inst['nbr_annotations']
        assert anns[-1]['token'] == inst['last_annotation_token']
        samples = [nusc.get('sample', a['sample_token']) for a in anns]
        for s0, s1 in zip(samples[:-1], samples[1:]):
            assert s0['next'] == s1['token']  # consecutive keyframes
    for ann in nusc.sample_annotation:
        names = [nusc.get('attribute', t)['name']
                 for t in ann['attribute_tokens']]
        velocity = nusc.box_velocity(ann['token'])[:2]
        speed = np.linalg.norm(velocity)
        cat = ann['category_name']
        assert ann['visibility_token'] in {'1', '2', '3', '4'}
        assert ann['num_lidar_pts'] + ann['num_radar_pts'] > 0 or \
            ann['prev'] and ann['next']  # zero-point boxes only mid-track
        if not np.isfinite(speed):  # single-annotation instance
            assert not ann['prev'] and not ann['next']
            continue
        if cat.startswith('movable_object'):
            assert names == [] and speed < 1e-6
        elif names[0] in ('vehicle.parked', 'vehicle.stopped',
                          'pedestrian.standing', 'cycle.without_rider'):
            assert speed < 1e-6, (names, speed)
        elif names[0] in ('vehicle.moving', 'pedestrian.moving'):
            assert speed > 0.5, (names, speed)


@pytest.mark.usefixtures('real_nuscenes_root')
def test_real_calibrations_scaled(synthetic):
    _, _, nusc = synthetic
    real = json.loads((REAL_TABLES / 'calibrated_sensor.json').read_text())
    sensors = json.loads((REAL_TABLES / 'sensor.json').read_text())
    channel = {s['token']: s['channel'] for s in sensors}
    real = {channel[r['sensor_token']]: r for r in real}
    sample = nusc.sample[0]
    for ch in CHANNELS:
        sd = nusc.get('sample_data', sample['data'][ch])
        cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
        assert nusc.get('sensor', cs['sensor_token'])['channel'] == ch
        np.testing.assert_allclose(cs['translation'], real[ch]['translation'])
        np.testing.assert_allclose(cs['rotation'], real[ch]['rotation'])
        if ch != 'LIDAR_TOP':
            expected = np.array(real[ch]['camera_intrinsic'])
            expected[:2] *= 352 / 1600
            np.testing.assert_allclose(cs['camera_intrinsic'], expected)


def test_lidar_points_fill_boxes(synthetic):
    from nuscenes.utils.geometry_utils import points_in_box
    _, _, nusc = synthetic
    checked = 0
    for sample in nusc.sample:
        points = _lidar_points_global(nusc, sample['data']['LIDAR_TOP'])
        _, boxes, _ = nusc.get_sample_data(sample['data']['LIDAR_TOP'])
        assert len(boxes) == len(sample['anns'])
        inside_any = np.zeros(points.shape[1], bool)
        for ann_tok in sample['anns']:
            ann = nusc.get('sample_annotation', ann_tok)
            inside = points_in_box(nusc.get_box(ann_tok), points[:3])
            inside_any |= inside
            assert inside.sum() == ann['num_lidar_pts']
            if ann['num_lidar_pts'] >= 10:
                checked += 1
        # the rest are ground (z ~ 0) or unannotated buildings
        assert inside_any.sum() < points.shape[1]
    assert checked > 20


def test_devkit_boxes_project_into_images(synthetic):
    """Fully visible nearby objects: their projected centre lands in the
    image on a pixel of the object's class colour (calibration chain)."""
    from nuscenes.utils.geometry_utils import BoxVisibility, view_points
    root, _, nusc = synthetic
    colours = {spec[0][0]: np.array(spec[2], float)
               for spec in CLASS_SPECS.values()}
    colours['human.pedestrian.child'] = colours['human.pedestrian.adult']
    good = total = 0
    for sample in nusc.sample:
        for ch in CHANNELS[1:]:
            path, boxes, K = nusc.get_sample_data(
                sample['data'][ch], box_vis_level=BoxVisibility.ALL)
            img = cv2.imread(path)[..., ::-1].astype(float)
            for box in boxes:
                ann = nusc.get('sample_annotation', box.token)
                uv = view_points(box.center[:, None], K, normalize=True)[:2, 0]
                assert -0.5 <= uv[0] < 351.5 and -0.5 <= uv[1] < 197.5
                corners = view_points(box.corners(), K, normalize=True)
                if box.center[2] > 30 or ann['visibility_token'] != '4' or \
                        np.ptp(corners[1]) < 15 or \
                        ann['category_name'] not in colours or \
                        ann['category_name'] == 'movable_object.barrier':
                    continue
                pixel = img[int(np.round(uv[1])), int(np.round(uv[0]))]
                want = colours[ann['category_name']]
                chroma = pixel / max(pixel.sum(), 1) - want / want.sum()
                total += 1
                good += np.abs(chroma).max() < 0.1
    assert total >= 5 and good >= 0.8 * total, (good, total)


def test_images_show_the_map_on_the_ground(synthetic):
    """Back-project pixels to the ground plane with the devkit calibration;
    the rendered material must be the map's (road, walkway or verge)."""
    import shapely
    from nuscenes.map_expansion.map_api import NuScenesMap
    from shapely.ops import unary_union
    from fuller.data_prep.synthetic import render
    root, _, nusc = synthetic
    palette = dict(road=[render.ASPHALT[0], render.CARPARK[0],
                         render.PAINT['white'][0], render.PAINT['yellow'][0]],
                   walkway=[render.WALKWAY[0]], verge=[render.GRASS[0]])
    names = [n for n, cols in palette.items() for _ in cols]
    colours = np.array([c for cols in palette.values() for c in cols], float)
    matched = checked = 0
    for scene in nusc.scene:
        nmap = NuScenesMap(str(root), nusc.get('log', scene['log_token'])[
            'location'])
        union = {layer: unary_union([nmap.extract_polygon(tok)
                                     for rec in getattr(nmap, layer)
                                     for tok in rec.get('polygon_tokens', [
                                         rec.get('polygon_token')])])
                 for layer in ('drivable_area', 'walkway')}
        sample = nusc.get('sample', scene['first_sample_token'])
        for ch in ('CAM_FRONT', 'CAM_BACK', 'CAM_FRONT_LEFT'):
            sd = nusc.get('sample_data', sample['data'][ch])
            cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
            pose = nusc.get('ego_pose', sd['ego_pose_token'])
            img = cv2.imread(nusc.get_sample_data_path(sd['token']))[..., ::-1]
            v, u = np.mgrid[120:198:6, 4:352:8]
            # pixel (v, u) is centred at (u, v) (fuller.structures.frames)
            pix = np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
            rot = Quaternion(pose['rotation']).rotation_matrix @ \
                Quaternion(cs['rotation']).rotation_matrix
            rays = rot @ np.linalg.inv(cs['camera_intrinsic']) @ pix
            origin = np.array(pose['translation']) + Quaternion(
                pose['rotation']).rotate(cs['translation'])
            depth = -origin[2] / rays[2]
            ground = origin[:2, None] + depth * rays[:2]
            keep = (rays[2] < 0) & (depth * np.linalg.norm(rays, axis=0) < 25)
            on_road = shapely.contains_xy(union['drivable_area'], *ground)
            on_walk = shapely.contains_xy(union['walkway'], *ground)
            want = np.where(on_road, 'road', np.where(on_walk, 'walkway',
                                                      'verge'))
            rgb = img[v.ravel(), u.ravel()].astype(float)
            dist = np.linalg.norm(rgb[:, None] - colours[None], axis=2)
            ground_like = dist.min(1) < 25  # boxes and sky excluded
            got = np.array(names)[dist.argmin(1)]
            sel = keep & ground_like
            checked += sel.sum()
            matched += (got[sel] == want[sel]).sum()
    assert checked > 300 and matched >= 0.95 * checked, (matched, checked)


def test_map_expansion_loads_and_masks(synthetic):
    from nuscenes.map_expansion.map_api import NuScenesMap
    root, _, nusc = synthetic
    polygon_layers = ['drivable_area', 'ped_crossing', 'walkway', 'stop_line',
                      'carpark_area']
    seen = dict.fromkeys(polygon_layers, 0)
    multi_lines, devkit_crash = 0, 0
    for scene in nusc.scene:
        loc = nusc.get('log', scene['log_token'])['location']
        nmap = NuScenesMap(str(root), loc)
        samples = [s for s in nusc.sample if s['scene_token'] == scene['token']]
        for sample in samples:
            pose = nusc.get('ego_pose', nusc.get(
                'sample_data', sample['data']['LIDAR_TOP'])['ego_pose_token'])
            x, y = pose['translation'][:2]
            yaw = np.rad2deg(Quaternion(pose['rotation']).yaw_pitch_roll[0])
            patch = (x, y, 100.0, 100.0)
            masks = nmap.get_map_mask(patch, yaw, polygon_layers, (200, 200))
            assert masks.shape == (5, 200, 200)
            assert masks[0, 99:101, 99:101].all()  # the ego is on the road
            basemap = nusc.get('map', nusc.get('log', scene['log_token'])[
                'map_token'])['mask']  # devkit MapMask of the PNG
            assert basemap.is_on_mask(x, y)[0]
            for name, mask in zip(polygon_layers, masks):
                seen[name] += int(mask.any())
            for _, geoms in nmap.get_map_geom(
                    patch, yaw, ['road_divider', 'lane_divider']):
                multi_lines += sum(g.geom_type == 'MultiLineString'
                                   for g in geoms)
            try:
                lines = nmap.get_map_mask(patch, yaw, ['road_divider',
                                                       'lane_divider'],
                                          (200, 200))
                assert lines.any()
            except TypeError:  # devkit 1.2 mask_for_lines under shapely 2
                devkit_crash += 1
        # vehicles stand on the drivable area, pedestrians off the road
        for sample in samples:
            for tok in sample['anns']:
                ann = nusc.get('sample_annotation', tok)
                layers = nmap.layers_on_point(*ann['translation'][:2])
                cat = ann['category_name']
                if cat.startswith(('vehicle.car', 'vehicle.bus',
                                   'vehicle.truck', 'vehicle.trailer')):
                    assert layers['drivable_area'], cat
                if cat.startswith('human.pedestrian'):
                    assert layers['walkway'] or layers['ped_crossing'], cat
    assert all(seen.values()), seen
    # curved / diagonal dividers leave and re-enter 100 m patches
    assert multi_lines > 0 and devkit_crash > 0


def test_ground_truth_scores_perfectly(synthetic, tmp_path):
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval
    from nuscenes.eval.detection.utils import category_to_detection_name
    _, _, nusc = synthetic
    for split in ('train', 'val'):
        eval_set = fsplits.eval_set_name('v1.0-mini', split)
        scenes = set(fsplits.get_split_scenes(
            'v1.0-mini', split, [s['name'] for s in nusc.scene]))
        results = {}
        for sample in nusc.sample:
            if nusc.get('scene', sample['scene_token'])['name'] not in scenes:
                continue
            results[sample['token']] = []
            for tok in sample['anns']:
                ann = nusc.get('sample_annotation', tok)
                name = category_to_detection_name(ann['category_name'])
                if name is None or \
                        ann['num_lidar_pts'] + ann['num_radar_pts'] == 0:
                    continue
                attr = [nusc.get('attribute', t)['name']
                        for t in ann['attribute_tokens']]
                vel = np.nan_to_num(nusc.box_velocity(tok)[:2])
                results[sample['token']].append(dict(
                    sample_token=sample['token'],
                    translation=ann['translation'], size=ann['size'],
                    rotation=ann['rotation'], velocity=vel.tolist(),
                    detection_name=name, detection_score=0.9,
                    attribute_name=attr[0] if attr else ''))
        path = tmp_path / f'{split}.json'
        path.write_text(json.dumps(dict(meta=dict(
            use_camera=True, use_lidar=True, use_radar=False, use_map=False,
            use_external=False), results=results)))
        metrics, _ = DetectionEval(
            nusc, config_factory('detection_cvpr_2019'), str(path), eval_set,
            str(tmp_path / split), verbose=False).evaluate()
        assert metrics.mean_ap == pytest.approx(1.0, abs=1e-6), split
        assert metrics.nd_score == pytest.approx(1.0, abs=1e-6), split


def _cli():
    return load_script(REPO / 'tools' / 'create_synthetic_nuscenes.py', 'create_synthetic_nuscenes')


def test_same_seed_same_bytes_via_cli(synthetic, tmp_path):
    """The CLI with the fixture's arguments rewrites identical files."""
    root, _, _ = synthetic
    other = tmp_path / 'again'
    assert _cli().main([
        '--root', str(other), '--num-scenes', '2', '--keyframes', '4',
        '--sweeps', '2', '--image-size', '352', '198', '--seed', '3',
        '--quiet']) == 0
    files = sorted(str(p.relative_to(root)) for p in root.rglob('*')
                   if p.is_file())
    assert files == sorted(str(p.relative_to(other))
                           for p in other.rglob('*') if p.is_file())
    for rel in files:
        assert (root / rel).read_bytes() == (other / rel).read_bytes(), rel


def test_other_seed_differs_and_overwrite(tmp_path):
    kw = dict(num_scenes=1, keyframes_per_scene=2, sweeps_per_keyframe=0,
              image_size=(64, 36), lidar_azimuths=180, objects_scale=0.3)
    a = generate_synthetic_nuscenes(str(tmp_path / 'a'), seed=1, **kw)
    generate_synthetic_nuscenes(str(tmp_path / 'b'), seed=2, **kw)
    assert a['scenes'][0]['name'] == 'scene-0061'
    ego = [json.loads((tmp_path / r / 'v1.0-mini' / 'ego_pose.json')
                      .read_text()) for r in 'ab']
    assert ego[0] != ego[1]
    with pytest.raises(FileExistsError, match='overwrite'):
        generate_synthetic_nuscenes(str(tmp_path / 'a'), seed=2, **kw)
    generate_synthetic_nuscenes(str(tmp_path / 'a'), seed=2, overwrite=True,
                                **kw)
    assert (tmp_path / 'a' / 'v1.0-mini' / 'ego_pose.json').read_text() == \
        (tmp_path / 'b' / 'v1.0-mini' / 'ego_pose.json').read_text()
    assert sorted(os.listdir(tmp_path)) == ['a', 'b']


@pytest.mark.parametrize('kwargs, match', [
    (dict(image_size=(700, 400)), '16:9'),
    (dict(image_size=(32, 18)), 'image_size'),
    (dict(image_size='704x396'), 'image_size'),
    (dict(num_scenes=0), 'num_scenes'),
    (dict(num_scenes=11), 'num_scenes'),
    (dict(keyframes_per_scene=1), 'keyframes_per_scene'),
    (dict(sweeps_per_keyframe=-1), 'sweeps_per_keyframe'),
    (dict(version='v2.0'), 'version'),
    (dict(num_val_scenes=3, num_scenes=2), 'num_val_scenes'),
    (dict(seed=-1), 'seed'),
])
def test_bad_arguments_fail_early(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_synthetic_nuscenes(str(tmp_path / 'x'), **kwargs)
    assert os.listdir(tmp_path) == []


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    from fuller.data_prep.synthetic import nuscenes as module

    def boom(*args, **kwargs):
        raise RuntimeError('simulated crash')

    monkeypatch.setattr(module, 'simulate_scene', boom)
    with pytest.raises(RuntimeError, match='simulated crash'):
        module.generate_synthetic_nuscenes(
            str(tmp_path / 'x'), num_scenes=1, keyframes_per_scene=2,
            image_size=(64, 36), lidar_azimuths=180)
    assert os.listdir(tmp_path) == []


def test_cli_rejects_unknown_and_bad_options(tmp_path, capsys):
    cli = _cli()
    with pytest.raises(SystemExit):
        cli.main(['--root', str(tmp_path / 'x'), '--frames', '3'])
    assert cli.main(['--root', str(tmp_path / 'x'), '--image-size', '100',
                     '100', '--quiet']) == 2
    assert '16:9' in capsys.readouterr().err
    assert not osp.exists(tmp_path / 'x')


def test_splits_follow_the_devkit():
    from nuscenes.utils import splits as devkit
    assert fsplits.get_split_scenes('v1.0-mini', 'val') == devkit.mini_val
    assert fsplits.get_split_scenes('v1.0-mini', 'mini_train') == \
        devkit.mini_train
    assert fsplits.get_split_scenes('v1.0-trainval', 'train') == devkit.train
    assert fsplits.get_split_scenes('v1.0-trainval', 'val') == devkit.val
    assert fsplits.get_split_scenes('v1.0-test', 'test') == devkit.test
    assert fsplits.eval_set_name('v1.0-mini', 'val') == 'mini_val'
    assert fsplits.eval_set_name('v1.0-trainval', 'train') == 'train'
    present = ['scene-0916', 'scene-0061']
    assert fsplits.get_split_scenes('v1.0-mini', 'val', present) == \
        ['scene-0916']
    assert fsplits.get_split_scenes('v1.0-mini', 'train', present) == \
        ['scene-0061']
    with pytest.raises(ValueError, match='no split'):
        fsplits.get_split_scenes('v1.0-mini', 'val', ['scene-0001'])
    with pytest.raises(ValueError, match='split'):
        fsplits.get_split_scenes('v1.0-mini', 'test')
    with pytest.raises(ValueError, match='version'):
        fsplits.get_split_scenes('v1.0', 'val')


def test_test_split_is_written_like_the_real_test_set(tmp_path):
    """v1.0-test: devkit test-split scene names, sensor data and the static
    tables, but empty instance and sample_annotation tables; its infos carry
    the version and no instances."""
    import pickle

    from nuscenes import NuScenes
    from nuscenes.utils.splits import create_splits_scenes

    from fuller.data_prep import create_nuscenes_data
    root = tmp_path / 'test'
    summary = generate_synthetic_nuscenes(
        str(root), version='v1.0-test', num_scenes=2, keyframes_per_scene=2,
        sweeps_per_keyframe=0, image_size=(64, 36), lidar_azimuths=180,
        objects_scale=0.3)
    assert sorted(os.listdir(root / 'v1.0-test')) == sorted(
        f'{t}.json' for t in ('attribute', 'calibrated_sensor', 'category',
                              'ego_pose', 'instance', 'log', 'map', 'sample',
                              'sample_annotation', 'sample_data', 'scene',
                              'sensor', 'visibility'))
    for table in ('instance', 'sample_annotation'):
        assert json.loads((root / 'v1.0-test' / f'{table}.json')
                          .read_text()) == []
    nusc = NuScenes('v1.0-test', str(root), verbose=False)
    test_scenes = create_splits_scenes()['test']
    assert [s['name'] for s in nusc.scene] == test_scenes[:2]
    assert [s['name'] for s in summary['scenes']] == test_scenes[:2]
    assert len(nusc.sample) == 4 and all(not s['anns'] for s in nusc.sample)
    assert len(nusc.category) == 23 and len(nusc.attribute) == 8
    lidar = nusc.get_sample_data_path(nusc.sample[0]['data']['LIDAR_TOP'])
    assert osp.getsize(lidar) > 0
    paths = create_nuscenes_data(str(root), str(root), 'v1.0-test',
                                 progress=False, nusc=nusc)
    assert list(paths) == ['test']
    infos = pickle.loads(open(paths['test'], 'rb').read())
    assert infos['metainfo']['version'] == 'v1.0-test'
    assert sorted(i['token'] for i in infos['data_list']) == sorted(
        s['token'] for s in nusc.sample)
    assert all(i['instances'] == [] for i in infos['data_list'])
