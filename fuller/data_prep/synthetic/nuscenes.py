"""Write a small synthetic dataset in the official nuScenes layout.

::

    <root>/<version>/*.json                 13 tables (devkit NuScenes loads them)
    <root>/samples/LIDAR_TOP/*.pcd.bin      keyframe scans, float32 x y z intensity ring
    <root>/sweeps/LIDAR_TOP/*.pcd.bin       intermediate scans (10 Hz with 4 per keyframe)
    <root>/samples/CAM_*/*.jpg              six cameras per 2 Hz keyframe
    <root>/maps/expansion/<location>.json   map expansion v1.3 (devkit NuScenesMap)
    <root>/maps/<token>.png                 semantic-prior basemap (devkit MapMask)

Scene names come from the devkit split lists (v1.0-mini: mini_train and
mini_val; v1.0-trainval: train and val; v1.0-test: test), so devkit split
filters and ``DetectionEval`` accept them. v1.0-test is written as the real
test set is: the same sensor data and static tables, but empty ``instance``
and ``sample_annotation`` tables (no ground truth).
Calibrations are the real nuScenes ones (intrinsics scaled to the image
size); LiDAR points are ray-cast against the annotated boxes, buildings and
the ground; images are rendered from the same scene with a z-buffer. The same
seed gives byte-identical files.

Frames: ``local`` (per scene) is the ``global`` frame shifted by the scene's
offset in its map; see :mod:`fuller.data_prep.synthetic.scene`.
"""
import datetime
import json
import os
import os.path as osp
import shutil
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...structures.nuscenes_splits import SPLITS, get_split_scenes
from .records import MapExpansion, make_token, static_tables
from .scene import SceneLayout, build_road_map
from .sensors import REAL_IMAGE_SIZE
from .simulate import SensorRig, ensure_visible_classes, simulate_scene
from .traffic import build_tracks, place_buildings, populate

LOCATIONS = ('singapore-onenorth', 'boston-seaport', 'singapore-queenstown',
             'singapore-hollandvillage')
KEYFRAME_US = 500_000  # 2 Hz keyframes
MAP_MARGIN = 50.0
TABLES = ('category', 'attribute', 'visibility', 'instance', 'sensor',
          'calibrated_sensor', 'ego_pose', 'log', 'scene', 'sample',
          'sample_data', 'sample_annotation', 'map')


def _check_int(name, value, lo, hi):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not lo <= value <= hi:
        raise ValueError(f'{name} must be an integer in [{lo}, {hi}], '
                         f'got {value!r}')


def _check_args(num_scenes, keyframes_per_scene, sweeps_per_keyframe,
                image_size, version, num_val_scenes, lidar_azimuths,
                objects_scale, jpeg_quality) -> Tuple[int, int]:
    if version not in SPLITS:
        raise ValueError(f'version must be one of {sorted(SPLITS)}, '
                         f'got {version!r}')
    _check_int('num_scenes', num_scenes, 1, 10 if 'mini' in version else 150)
    _check_int('keyframes_per_scene', keyframes_per_scene, 2, 40)
    _check_int('sweeps_per_keyframe', sweeps_per_keyframe, 0, 9)
    _check_int('lidar_azimuths', lidar_azimuths, 90, 4000)
    _check_int('jpeg_quality', jpeg_quality, 10, 100)
    if num_val_scenes is not None:
        _check_int('num_val_scenes', num_val_scenes, 0, num_scenes)
    if not 0 <= float(objects_scale) <= 5:
        raise ValueError(f'objects_scale must be in [0, 5], got '
                         f'{objects_scale!r}')
    try:
        w, h = (int(v) for v in image_size)
        ok = len(tuple(image_size)) == 2 and w == image_size[0] and \
            h == image_size[1]
    except (TypeError, ValueError):
        ok = False
    if not ok or not 64 <= w <= 3200 or w * REAL_IMAGE_SIZE[1] != \
            h * REAL_IMAGE_SIZE[0]:
        raise ValueError(f'image_size must be (W, H) integers with W in '
                         f'[64, 3200] and the nuScenes 16:9 aspect (W = 16k, '
                         f'H = 9k, e.g. (1600, 900), (704, 396), (352, 198)),'
                         f' got {image_size!r}')
    return w, h


def scene_plan(version: str, num_scenes: int,
               num_val_scenes: Optional[int]) -> List[Tuple[str, str]]:
    """(scene name, split) pairs: devkit names, train scenes first."""
    if version == 'v1.0-test':
        return [(n, 'test') for n in
                get_split_scenes(version, 'test')[:num_scenes]]
    train = get_split_scenes(version, 'train')
    val = get_split_scenes(version, 'val')
    if num_val_scenes is None:
        num_val_scenes = 0 if num_scenes == 1 else \
            max(1, int(round(num_scenes / 4)))
    num_val_scenes = min(num_val_scenes, len(val))
    n_train = num_scenes - num_val_scenes
    if n_train > len(train):
        raise ValueError(f'{version} has only {len(train)} train scenes')
    return ([(n, 'train') for n in train[:n_train]] +
            [(n, 'val') for n in val[:num_val_scenes]])


def _build_layout(seed: int, index: int, keyframes: int,
                  objects_scale: float, azimuths: int):
    """Road map, traffic and buildings of scene ``index`` (local frame)."""
    rng = np.random.default_rng([seed, index])
    duration = (keyframes - 1) * KEYFRAME_US * 1e-6
    ego_speed = float(rng.uniform(4.0, 9.0))
    travel = ego_speed * duration
    paths, info, elements = build_road_map(rng, travel, duration)
    tracks = build_tracks(rng, paths, info, travel, ego_speed, duration)
    layout = SceneLayout(main=paths['main'], ego_speed=ego_speed,
                         map_elements=elements, tracks=tracks)
    check_times = np.arange(-0.1, duration + 0.3, 0.25)
    placer = populate(rng, layout, tracks, info, travel, check_times,
                      objects_scale)
    layout.buildings = place_buildings(rng, paths, info, elements, travel)
    layout.unseen_classes = []
    if objects_scale > 0:
        key_times = np.arange(keyframes) * KEYFRAME_US * 1e-6
        layout.unseen_classes = ensure_visible_classes(
            placer, tracks, travel, key_times, azimuths)
    polys = [p for layer in ('drivable_area', 'walkway') for p in
             elements[layer]]
    bounds = np.array([p.bounds for p in polys])
    layout.bounds = (bounds[:, 0].min(), bounds[:, 1].min(),
                     bounds[:, 2].max(), bounds[:, 3].max())
    return layout


def scene_layout(seed: int, index: int, keyframes_per_scene: int = 8,
                 objects_scale: float = 1.0,
                 lidar_azimuths: int = 1084) -> SceneLayout:
    """The layout (road map, objects and their tracks, ego path; ``local``
    frame) of scene ``index`` of a dataset generated with these arguments:
    the generator's own ground truth, for checks that need more than the
    written files (e.g. which pixels an object covers)."""
    return _build_layout(seed, index, keyframes_per_scene, objects_scale,
                         lidar_azimuths)


def _place_in_maps(layouts, locations) -> Tuple[list, Dict[str, tuple]]:
    """Integer offsets (local -> global) putting each location's scenes side
    by side with all coordinates positive; canvas size per location."""
    offsets, cursor, height = [], {}, {}
    for layout, loc in zip(layouts, locations):
        x0, y0, x1, y1 = layout.bounds
        start = cursor.get(loc, MAP_MARGIN)
        offsets.append((float(np.ceil(start - x0)),
                        float(np.ceil(MAP_MARGIN - y0)), 0.0))
        cursor[loc] = start + (x1 - x0) + MAP_MARGIN
        height[loc] = max(height.get(loc, 0.0), (y1 - y0) + 2 * MAP_MARGIN)
    canvas = {loc: (float(np.ceil(cursor[loc])), float(np.ceil(height[loc])))
              for loc in cursor}
    return offsets, canvas


def _log_record(seed, index, location) -> Tuple[dict, int]:
    """Log record and the first timestamp (us) of scene ``index``."""
    boston = location.startswith('boston')
    tz = datetime.timezone(datetime.timedelta(hours=-4 if boston else 8))
    start = datetime.datetime(2018, 7, 24, 11, 22, 45, tzinfo=tz) + \
        datetime.timedelta(days=index, minutes=7 * index)
    stamp = start.strftime('%Y-%m-%d-%H-%M-%S%z')
    vehicle = 'n008' if boston else 'n015'
    log = dict(token=make_token(seed, 'log', index),
               logfile=f'{vehicle}-{stamp}', vehicle=vehicle,
               date_captured=start.strftime('%Y-%m-%d'), location=location)
    return log, int(start.timestamp()) * 1_000_000 + 2_000_000


def _write_json(path: str, obj) -> None:
    with open(path, 'w') as f:  # compact: uses json's C encoder
        json.dump(obj, f, separators=(',', ':'))


def generate_synthetic_nuscenes(
        root: str = 'data/nuscenes-synthetic', *, num_scenes: int = 4,
        keyframes_per_scene: int = 8, sweeps_per_keyframe: int = 4,
        image_size: Sequence[int] = (1600, 900), seed: int = 0,
        version: str = 'v1.0-mini', num_val_scenes: Optional[int] = None,
        lidar_azimuths: int = 1084, objects_scale: float = 1.0,
        jpeg_quality: int = 90, overwrite: bool = False,
        verbose: bool = False) -> dict:
    """Generate a synthetic nuScenes dataroot at ``root``.

    Args:
        root: target dataroot; written atomically (built in a temporary
            directory beside it, then renamed into place).
        num_scenes: scenes, named after the devkit split lists of
            ``version`` (v1.0-mini: at most 10).
        keyframes_per_scene: 2 Hz samples per scene (>= 2).
        sweeps_per_keyframe: LiDAR sweeps between keyframes (4 -> 10 Hz).
        image_size: (W, H) of the camera images, 16:9; intrinsics are the
            real ones scaled from 1600 x 900.
        seed: the same seed gives byte-identical tables and files.
        version: 'v1.0-mini', 'v1.0-trainval' or 'v1.0-test' (no
            annotations).
        num_val_scenes: scenes taken from the val list (default ~1/4, at
            least one when num_scenes > 1).
        lidar_azimuths: LiDAR firings per revolution (32 beams each).
        objects_scale: multiplies the number of objects per scene.
        jpeg_quality: JPEG quality of the camera images.
        overwrite: replace an existing non-empty ``root``.
        verbose: print progress.

    Returns:
        A summary dict (scenes, splits, record counts, seconds).
    """
    start = time.time()
    size = _check_args(num_scenes, keyframes_per_scene, sweeps_per_keyframe,
                       image_size, version, num_val_scenes, lidar_azimuths,
                       objects_scale, jpeg_quality)
    _check_int('seed', seed, 0, 2**32 - 1)
    root = osp.abspath(root)
    if osp.exists(root) and (not osp.isdir(root) or os.listdir(root)) \
            and not overwrite:
        raise FileExistsError(f'{root} exists and is not empty; pass '
                              f'overwrite=True (--overwrite) to replace it')
    plan = scene_plan(version, num_scenes, num_val_scenes)
    os.makedirs(osp.dirname(root), exist_ok=True)
    tmp = osp.join(osp.dirname(root), f'.{osp.basename(root)}.tmp-{os.getpid()}')
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        summary = _generate(tmp, plan, size, seed, version,
                            keyframes_per_scene, sweeps_per_keyframe,
                            lidar_azimuths, objects_scale, jpeg_quality,
                            verbose)
        _replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary.update(root=root, seconds=round(time.time() - start, 2))
    return summary


def _replace_dir(tmp: str, root: str) -> None:
    old = None
    if osp.exists(root):
        old = f'{tmp}.old'
        os.rename(root, old)
    os.rename(tmp, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _generate(out, plan, size, seed, version, keyframes, sweeps, azimuths,
              objects_scale, jpeg_quality, verbose) -> dict:
    tables = static_tables()
    for name in TABLES:
        tables.setdefault(name, [])
    locations = [LOCATIONS[i % len(LOCATIONS)] for i in range(len(plan))]
    layouts = [_build_layout(seed, i, keyframes, objects_scale, azimuths)
               for i in range(len(plan))]
    offsets, canvas = _place_in_maps(layouts, locations)
    maps = {loc: MapExpansion(loc, seed) for loc in canvas}
    rig = SensorRig(size)
    scenes = []
    for i, ((name, split), layout, loc) in enumerate(zip(plan, layouts,
                                                         locations)):
        log, t0 = _log_record(seed, i, loc)
        tables['log'].append(log)
        maps[loc].add_scene(layout.map_elements, offsets[i])
        stats = simulate_scene(
            out, tables, layout, rig, dict(
                seed=seed, index=i, name=name, log=log, t0=t0,
                offset=np.asarray(offsets[i]), keyframes=keyframes,
                sweeps=sweeps, image_size=size, azimuths=azimuths,
                keyframe_us=KEYFRAME_US, jpeg_quality=jpeg_quality,
                annotate=version != 'v1.0-test'))
        scenes.append(dict(name=name, split=split, location=loc, **stats,
                           unseen_classes=layout.unseen_classes))
        if verbose:
            unseen = ', '.join(layout.unseen_classes)
            print(f'[synthetic-nuscenes] {name} ({split}, {loc}): '
                  f'{stats["num_annotations"]} annotations' +
                  (f'; no LiDAR returns in range for: {unseen}'
                   if unseen else ''))
    os.makedirs(osp.join(out, 'maps', 'expansion'))
    for loc, builder in maps.items():
        map_token = make_token(seed, 'map', loc)
        filename = f'maps/{map_token}.png'
        with open(osp.join(out, filename), 'wb') as f:
            f.write(builder.semantic_prior_png(canvas[loc]))
        _write_json(osp.join(out, 'maps', 'expansion', f'{loc}.json'),
                    builder.to_json(canvas[loc]))
        tables['map'].append(dict(
            token=map_token, category='semantic_prior', filename=filename,
            log_tokens=[log['token'] for log in tables['log']
                        if log['location'] == loc]))
    os.makedirs(osp.join(out, version))
    for name in TABLES:
        _write_json(osp.join(out, version, f'{name}.json'), tables[name])
    cls_counts: Dict[str, int] = {}
    for s in scenes:
        for cls, n in s.pop('class_counts').items():
            cls_counts[cls] = cls_counts.get(cls, 0) + n
    return dict(version=version, seed=seed, image_size=list(size),
                scenes=scenes,
                num_records={name: len(tables[name]) for name in TABLES},
                annotations_per_class=dict(sorted(cls_counts.items())))
