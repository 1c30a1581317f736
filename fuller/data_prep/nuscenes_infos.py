"""nuScenes dataroot -> mmdet3d v2 info pkls (plus fuller's map fields).

Frames (see ``fuller.structures.frames``): ``lidar`` is LIDAR_TOP of the
keyframe, ``ego`` the vehicle at the timestamp of each sample_data, ``global``
the map frame of the log, ``cam`` a camera. Every matrix is a homogeneous
``a2b`` 4x4 acting on column vectors, stored as nested lists.

The schema is mmdet3d 1.4's v2 nuScenes info (``tools/dataset_converters``:
``nuscenes_converter.py`` then ``update_infos_to_v2.py``), field for field:

- ``lidar_points.lidar_path``, ``images[CAM].img_path``: bare file names,
  joined by the dataset with ``data_prefix`` (pts='samples/LIDAR_TOP',
  CAM_FRONT='samples/CAM_FRONT', ..., sweeps='sweeps/LIDAR_TOP').
- ``lidar_sweeps[i].lidar_points.lidar_path``: the devkit file name relative
  to the dataroot (``sweeps/LIDAR_TOP/...`` or ``samples/LIDAR_TOP/...``);
  mmdet3d's dataset keeps the basename and picks the prefix by whether the
  path contains 'samples'.
- ``lidar_sweeps``: absent for a keyframe without previous sweeps (mmdet3d
  drops empty lists; its ``LoadPointsFromMultiSweeps(pad_empty_sweeps=True)``
  pads only when the key is missing).
- ``lidar_sweeps[i].lidar_points.lidar2sensor``: keyframe-lidar -> sweep-lidar,
  i.e. ``inv(sweep_lidar2keyframe_lidar)``, exactly what mmdet3d stores. A
  loader maps sweep points into the keyframe with ``inv(lidar2sensor)``
  (mmdet3d 1.4's ``LoadPointsFromMultiSweeps`` computes ``p @ R - t``, which
  gets the translation wrong when R != I: mmdet3d issue #3054).
- ``instances[i].bbox_3d``: ``[x, y, z, l, w, h, yaw]`` in the lidar frame with
  (x, y, z) the box's *gravity* centre as the devkit gives it; mmdet3d's
  ``NuScenesDataset`` builds ``LiDARInstance3DBoxes(..., origin=(0.5, 0.5,
  0.5))``, which moves it to the bottom centre. yaw: from +x towards +y.
- ``instances[i].velocity``: devkit ``box_velocity`` (global, m/s) rotated into
  the lidar frame; NaN where the devkit cannot estimate it (mmdet3d's dataset
  turns NaN into 0).
- ``timestamp``: seconds (devkit microseconds / 1e6).

fuller adds ``location`` (map name), ``scene_token``, ``map_mask_path``
(relative to the output directory) and ``attr_label`` on each instance.
"""
import functools
import os.path as osp
import pickle
import warnings
from typing import Callable, Dict, List

import numpy as np
from pyquaternion import Quaternion
from tqdm import tqdm

from fuller.data_prep import bev_map_masks
from fuller.structures.frames import invert_transform, make_transform
from fuller.structures.geometry import as_bev_grid
from fuller.structures.nuscenes_world import CAMERAS, DETECTION_CLASSES, MAP_GRID
from fuller.utils.io import atomic_open

NUS_ATTRIBUTES = ('cycle.with_rider', 'cycle.without_rider',
                  'pedestrian.moving', 'pedestrian.standing',
                  'pedestrian.sitting_lying_down', 'vehicle.moving',
                  'vehicle.parked', 'vehicle.stopped', 'None')
LIDAR_CHANNEL = 'LIDAR_TOP'
LIDAR_NUM_FEATS = 5  # x, y, z, intensity, ring index (float32 each)
# output split name -> split name in fuller.data_prep.splits, per version.
VERSION_SPLITS = {
    'v1.0-trainval': {'train': 'train', 'val': 'val'},
    'v1.0-test': {'test': 'test'},
    'v1.0-mini': {'train': 'mini_train', 'val': 'mini_val'},
}
REQUIRED_TABLES = ('attribute', 'calibrated_sensor', 'category', 'ego_pose',
                   'instance', 'log', 'map', 'sample', 'sample_annotation',
                   'sample_data', 'scene', 'sensor', 'visibility')
# data_prefix for mmdet3d's NuScenesDataset matching the stored file names.
DATA_PREFIX = dict(pts='samples/LIDAR_TOP', sweeps='sweeps/LIDAR_TOP',
                   **{cam: f'samples/{cam}' for cam in CAMERAS})
MAP_MASK_DIR = 'map_masks'

TableGetter = Callable[[str, str], dict]  # (table name, token) -> record


def check_version(version: str) -> Dict[str, str]:
    """Output split -> devkit split of ``version``; clear error if unknown."""
    if version not in VERSION_SPLITS:
        raise ValueError(f'Unknown nuScenes version {version!r}; expected '
                         f'one of {sorted(VERSION_SPLITS)}')
    return VERSION_SPLITS[version]


def check_dataroot(root: str, version: str) -> None:
    """Raise if ``root/version`` lacks a table the devkit needs."""
    check_version(version)
    table_dir = osp.join(root, version)
    if not osp.isdir(table_dir):
        raise FileNotFoundError(
            f'nuScenes table directory not found: {table_dir}; expected the '
            f'{version} metadata (*.json) of the dataset under --root-path')
    for table in REQUIRED_TABLES:
        path = osp.join(table_dir, f'{table}.json')
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'nuScenes table missing: {path} (needed by the devkit for '
                f'{version}); re-extract the {version} metadata archive')


def info_pkl_path(out_dir: str, extra_tag: str, split: str) -> str:
    """``OUT/<extra_tag>_infos_<split>.pkl``, mmdet3d's naming."""
    return osp.join(out_dir, f'{extra_tag}_infos_{split}.pkl')


def map_mask_relpath(sample_token: str) -> str:
    """Path of a sample's packed map masks, relative to the output dir."""
    return f'{MAP_MASK_DIR}/{sample_token}.npz'


def count_lidar_points(path: str, num_feats: int = LIDAR_NUM_FEATS) -> int:
    """Number of points in a float32 ``.pcd.bin``; errors name the file."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'LiDAR file not found: {path}')
    size = osp.getsize(path)
    record = 4 * num_feats
    if size % record:
        raise ValueError(
            f'LiDAR file {path} is corrupt: {size} bytes is not a multiple '
            f'of {record} ({num_feats} float32 per point)')
    return size // record


def record_to_matrix(record: dict) -> np.ndarray:
    """4x4 from a devkit pose/calibration record (rotation wxyz, xyz)."""
    return make_transform(
        Quaternion(record['rotation']).rotation_matrix, record['translation'])


def sample_data_poses(get: TableGetter, sd_token: str):
    """(sample_data record, sensor2ego, ego2global) for one sample_data."""
    sd = get('sample_data', sd_token)
    sensor2ego = record_to_matrix(
        get('calibrated_sensor', sd['calibrated_sensor_token']))
    ego2global = record_to_matrix(get('ego_pose', sd['ego_pose_token']))
    return sd, sensor2ego, ego2global


def camera_infos(get: TableGetter, sample: dict,
                 lidar2global: np.ndarray) -> Dict[str, dict]:
    """``images`` of one sample: per-camera paths and a2b matrices.

    lidar2cam goes through each camera's own ego pose (its timestamp), as
    mmdet3d does: cam <- ego(t_cam) <- global <- ego(t_lidar) <- lidar.
    """
    global2lidar = invert_transform(lidar2global)
    images = {}
    for cam in CAMERAS:
        sd, cam2ego, ego2global = sample_data_poses(get, sample['data'][cam])
        cam2lidar = global2lidar @ ego2global @ cam2ego
        calib = get('calibrated_sensor', sd['calibrated_sensor_token'])
        images[cam] = dict(
            img_path=osp.basename(sd['filename']),
            cam2img=np.asarray(calib['camera_intrinsic'],
                               dtype=np.float64).tolist(),
            sample_data_token=sd['token'],
            timestamp=sd['timestamp'] / 1e6,
            cam2ego=cam2ego.tolist(),
            lidar2cam=invert_transform(cam2lidar).tolist())
    return images


def lidar_sweeps(get: TableGetter, lidar_sd: dict, lidar2global: np.ndarray,
                 max_sweeps: int) -> List[dict]:
    """Up to ``max_sweeps`` previous LiDAR sweeps, newest first."""
    global2lidar = invert_transform(lidar2global)
    sweeps = []
    sd = lidar_sd
    while len(sweeps) < max_sweeps and sd['prev']:
        sd, sweep2ego, ego2global = sample_data_poses(get, sd['prev'])
        sweep2lidar = global2lidar @ ego2global @ sweep2ego
        sweeps.append(dict(
            lidar_points=dict(
                lidar_path=sd['filename'],
                lidar2ego=sweep2ego.tolist(),
                lidar2sensor=invert_transform(sweep2lidar).tolist()),
            ego2global=ego2global.tolist(),
            timestamp=sd['timestamp'] / 1e6,
            sample_data_token=sd['token']))
    return sweeps


@functools.lru_cache(maxsize=1)
def _name_mapping() -> dict:
    """mmdet3d's nuScenes category -> detection class map (imported when
    infos are written: ``mmdet3d.datasets`` pulls in mmdet3d's models and
    spconv, seconds that the map-mask step alone does not need)."""
    from mmdet3d.datasets.convert_utils import NuScenesNameMapping
    return NuScenesNameMapping


def _class_label(category_name: str) -> int:
    name = _name_mapping().get(category_name, category_name)
    return DETECTION_CLASSES.index(name) if name in DETECTION_CLASSES else -1


def _attr_label(get: TableGetter, ann: dict) -> int:
    if not ann['attribute_tokens']:
        return NUS_ATTRIBUTES.index('None')
    return NUS_ATTRIBUTES.index(
        get('attribute', ann['attribute_tokens'][0])['name'])


def annotation_instances(nusc, sample: dict,
                         lidar2global: np.ndarray) -> List[dict]:
    """GT boxes of a sample in the lidar frame, in ``sample['anns']`` order.

    Args:
        nusc: a devkit ``NuScenes`` (for tables and ``box_velocity``).
        sample: the sample record.
        lidar2global: (4, 4) of the keyframe LiDAR.
    """
    global2lidar = invert_transform(lidar2global)
    rot_g2l = global2lidar[:3, :3]
    quat_g2l = Quaternion(matrix=rot_g2l, rtol=1e-6, atol=1e-6)
    instances = []
    for ann_token in sample['anns']:
        ann = nusc.get('sample_annotation', ann_token)
        centre_lidar = global2lidar @ np.append(ann['translation'], 1.0)
        # pyquaternion's yaw, as the devkit box / mmdet3d converter use it
        yaw = (quat_g2l * Quaternion(ann['rotation'])).yaw_pitch_roll[0]
        width, length, height = ann['size']  # devkit wlh
        velo_global = np.array([*nusc.box_velocity(ann_token)[:2], 0.0])
        velo_lidar = rot_g2l @ velo_global
        label = _class_label(ann['category_name'])
        instances.append(dict(
            bbox_3d=[*centre_lidar[:3].tolist(), length, width, height,
                     float(yaw)],
            bbox_label=label,
            bbox_label_3d=label,
            velocity=velo_lidar[:2].tolist(),
            num_lidar_pts=int(ann['num_lidar_pts']),
            num_radar_pts=int(ann['num_radar_pts']),
            bbox_3d_isvalid=bool(
                ann['num_lidar_pts'] + ann['num_radar_pts'] > 0),
            attr_label=_attr_label(nusc.get, ann)))
    return instances


def _check_sensor_files(root: str, lidar_sd: dict, sweeps: List[dict],
                        images: Dict[str, dict], sample: dict,
                        get: TableGetter) -> None:
    """Fail early, naming the file, on a missing or corrupt sensor file."""
    count_lidar_points(osp.join(root, lidar_sd['filename']))
    for sweep in sweeps:
        count_lidar_points(osp.join(root, sweep['lidar_points']['lidar_path']))
    for cam in images:
        path = osp.join(root, get('sample_data', sample['data'][cam])[
            'filename'])
        if not osp.isfile(path):
            raise FileNotFoundError(f'Camera image not found: {path}')


def build_sample_info(nusc, sample: dict, max_sweeps: int = 10,
                      with_gt: bool = True,
                      check_files: bool = True) -> dict:
    """One ``data_list`` entry (without ``sample_idx``) for a sample."""
    get = nusc.get
    lidar_sd, lidar2ego, ego2global = sample_data_poses(
        get, sample['data'][LIDAR_CHANNEL])
    lidar2global = ego2global @ lidar2ego
    images = camera_infos(get, sample, lidar2global)
    sweeps = lidar_sweeps(get, lidar_sd, lidar2global, max_sweeps)
    if check_files:
        _check_sensor_files(nusc.dataroot, lidar_sd, sweeps, images, sample,
                            get)
    scene = get('scene', sample['scene_token'])
    info = dict(
        token=sample['token'],
        timestamp=sample['timestamp'] / 1e6,
        ego2global=ego2global.tolist(),
        images=images,
        lidar_points=dict(num_pts_feats=LIDAR_NUM_FEATS,
                          lidar_path=osp.basename(lidar_sd['filename']),
                          lidar2ego=lidar2ego.tolist()),
        instances=(annotation_instances(nusc, sample, lidar2global)
                   if with_gt else []),
        location=get('log', scene['log_token'])['location'],
        scene_token=sample['scene_token'],
        map_mask_path=map_mask_relpath(sample['token']))
    if sweeps:  # absent when empty, as mmdet3d (pad_empty_sweeps needs it)
        info['lidar_sweeps'] = sweeps
    return info


def _split_scene_tokens(nusc, version: str) -> Dict[str, set]:
    """Output split -> tokens of its scenes present in the tables."""
    from fuller.data_prep.splits import get_split_scenes
    name2token = {s['name']: s['token'] for s in nusc.scene}
    result, used = {}, set()
    for split, devkit_split in check_version(version).items():
        names = [n for n in get_split_scenes(version, devkit_split)
                 if n in name2token]
        result[split] = {name2token[n] for n in names}
        used.update(names)
    unused = sorted(set(name2token) - used)
    if unused:
        warnings.warn(f'{len(unused)} scene(s) of {version} belong to no '
                      f'split and are left out: {unused[:5]}...')
    return result


def build_split_infos(nusc, version: str, max_sweeps: int = 10,
                      progress: bool = True) -> Dict[str, List[dict]]:
    """Output split name -> its ``data_list`` (mmdet3d v2 entries)."""
    split_scenes = _split_scene_tokens(nusc, version)
    with_gt = version != 'v1.0-test'
    data_lists = {split: [] for split in split_scenes}
    scene2split = {tok: split for split, toks in split_scenes.items()
                   for tok in toks}
    samples = [s for s in nusc.sample if s['scene_token'] in scene2split]
    for sample in tqdm(samples, desc=f'{version} infos', disable=not progress):
        info = build_sample_info(nusc, sample, max_sweeps, with_gt)
        data_list = data_lists[scene2split[sample['scene_token']]]
        data_list.append(dict(sample_idx=len(data_list), **info))
    return data_lists


def info_metainfo(version: str) -> dict:
    """mmdet3d v2 ``metainfo`` (boxes of other categories have label -1)."""
    categories = {name: i for i, name in enumerate(DETECTION_CLASSES)}
    return dict(categories=categories, dataset='nuscenes', version=version,
                info_version='1.1')


def write_pickle_atomic(obj, path: str) -> None:
    """Pickle ``obj`` to ``path`` via a temp file and ``os.replace``."""
    with atomic_open(path, 'wb') as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def load_nuscenes(root: str, version: str):
    """Check the tables, then open the devkit database."""
    check_dataroot(root, version)
    from nuscenes.nuscenes import NuScenes
    return NuScenes(version=version, dataroot=root, verbose=False)


def create_nuscenes_data(root: str, out_dir: str, version: str,
                         max_sweeps: int = 10, extra_tag: str = 'nuscenes',
                         workers: int = 0, skip_map_masks: bool = False,
                         progress: bool = True,
                         nusc=None, map_grid=None) -> Dict[str, str]:
    """Infos for every split of ``version`` plus the map-mask cache.

    Order: pre-flight checks (tables, map files), all infos in memory
    (checks every sensor file), map masks (each file atomic, resumable), then
    the pkls (atomic). A failure before the last step writes no pkl. Run one
    conversion per ``out_dir`` at a time.

    Returns:
        Output split name -> path of its info pkl.
    """
    check_version(version)
    if nusc is None:
        nusc = load_nuscenes(root, version)
    if not skip_map_masks:
        locations = sorted({log['location'] for log in nusc.log})
        bev_map_masks.check_map_expansion(root, locations)
    data_lists = build_split_infos(nusc, version, max_sweeps, progress)
    if not skip_map_masks:
        all_infos = [i for dl in data_lists.values() for i in dl]
        bev_map_masks.create_map_mask_cache(
            root, out_dir, all_infos, workers=workers, progress=progress,
            grid=MAP_GRID if map_grid is None else as_bev_grid(map_grid))
    paths = {}
    for split, data_list in data_lists.items():
        if not data_list:
            warnings.warn(f'{version} split {split!r} has no samples in '
                          f'{root}; writing an empty info file')
        paths[split] = info_pkl_path(out_dir, extra_tag, split)
        write_pickle_atomic(
            dict(metainfo=info_metainfo(version),
                 data_list=data_list), paths[split])
    return paths
