"""Run the sensors through one synthetic scene and write its nuScenes records.

Frames: ``local`` (scene map frame), ``global = local + offset``, ``ego``
(yaw-only pose on the ground plane), sensor frames as in
:mod:`fuller.data_prep.synthetic.sensors`. Times ``t`` are seconds from the
scene's first keyframe; timestamps are integer microseconds.
"""
import os
import os.path as osp
from typing import Dict, List

import cv2
import numpy as np

from fuller.structures.nuscenes_world import CAMERAS, DETECTION_CLASSES

from .records import attribute_name, make_token, visibility_token
from .render import GroundRaster, pixel_rays, render_camera
from .scene import EVAL_RANGE, SceneLayout
from .sensors import (CAMERA_CALIBS, CAMERA_TIME_OFFSETS_US, LIDAR_CALIB,
                      SENSOR_TOKENS, lidar_box_counts, lidar_directions,
                      lidar_sweep, quat_to_matrix, radar_counts,
                      scaled_intrinsic, yaw_to_quat)
from .traffic import boxes_at

GROUND_MARGIN = 130.0  # textured ground around the ego path (m)


def _frames(cfg) -> List[dict]:
    """All sensor frames of the scene in time order per channel."""
    frames = []
    kf_us, n_sw = cfg['keyframe_us'], cfg['sweeps']
    for k in range(cfg['keyframes']):
        t_key = cfg['t0'] + k * kf_us
        if k > 0:
            for j in range(1, n_sw + 1):
                ts = t_key - kf_us + int(round(j * kf_us / (n_sw + 1)))
                frames.append(dict(channel='LIDAR_TOP', ts=ts, key=False, k=k))
        frames.append(dict(channel='LIDAR_TOP', ts=t_key, key=True, k=k))
        for cam in CAMERAS:
            frames.append(dict(channel=cam, ts=t_key +
                               CAMERA_TIME_OFFSETS_US[cam], key=True, k=k))
    return frames


class SensorRig:
    """Sensor extrinsics (sensor -> ego) and camera rays."""

    def __init__(self, image_size):
        self.rot = {'LIDAR_TOP': quat_to_matrix(LIDAR_CALIB['rotation'])}
        self.trans = {'LIDAR_TOP': np.array(LIDAR_CALIB['translation'])}
        self.cam2img, self.rays = {}, {}
        for cam, (trans, rot, _) in CAMERA_CALIBS.items():
            self.rot[cam], self.trans[cam] = quat_to_matrix(rot), np.array(trans)
            self.cam2img[cam] = scaled_intrinsic(cam, image_size)
            self.rays[cam] = pixel_rays(self.cam2img[cam], image_size)

    def pose(self, channel, ego_xy, ego_yaw):
        return sensor_pose(ego_xy, ego_yaw, self.trans[channel],
                           self.rot[channel])


def sensor_pose(ego_xy, ego_yaw, sensor2ego_trans, sensor2ego_rot):
    """Sensor origin (3,) and sensor -> local rotation (3, 3)."""
    c, s = np.cos(ego_yaw), np.sin(ego_yaw)
    ego_rot = np.array([[c, -s, 0.], [s, c, 0.], [0., 0., 1.]])
    origin = np.array([ego_xy[0], ego_xy[1], 0.]) + ego_rot @ sensor2ego_trans
    return origin, ego_rot @ sensor2ego_rot


def unseen_classes(layout: SceneLayout, times, lidar_dirs,
                   min_points: int = 3) -> List[str]:
    """Detection classes without an object that has >= min_points LiDAR
    returns while inside the class's evaluation range, at some keyframe."""
    seen = set()
    trans = np.array(LIDAR_CALIB['translation'])
    rot = quat_to_matrix(LIDAR_CALIB['rotation'])
    n_obj = len(layout.objects)
    for t in times:
        xy, yaw = layout.ego_pose(np.array([t]))
        origin, s2l = sensor_pose(xy[0], float(yaw[0]), trans, rot)
        boxes = boxes_at(layout, t)
        counts = lidar_box_counts(origin, s2l, lidar_dirs, boxes)[:n_obj]
        dist = np.hypot(*(boxes['centre'][:n_obj, :2] - xy[0]).T)
        for i in np.flatnonzero(counts >= min_points):
            cls = layout.objects[i].cls
            if dist[i] <= EVAL_RANGE[cls] - 2:
                seen.add(cls)
    return [c for c in DETECTION_CLASSES if c not in seen]


def ensure_visible_classes(placer, tracks, travel: float, times,
                           azimuths: int, rounds: int = 12) -> List[str]:
    """Add instances close to the ego path until every detection class is
    seen by the LiDAR within its evaluation range (so that evaluating the
    ground truth against itself scores mAP = 1 on any split). Returns the
    classes still unseen (normally none)."""
    dirs = lidar_directions(azimuths)
    for r in range(rounds):
        missing = unseen_classes(placer.layout, times, dirs)
        if not missing:
            break
        for cls in missing:
            reach = EVAL_RANGE[cls] / 2
            placer.place(cls, tracks, (-reach * r / rounds,
                                       travel + reach * (1 + r / rounds)))
    return unseen_classes(placer.layout, times, dirs)


def _calibrated_sensors(tables, cfg, rig) -> Dict[str, str]:
    tokens = {}
    for ch in ('LIDAR_TOP', ) + CAMERAS:
        tok = make_token(cfg['seed'], 'calibrated_sensor', cfg['index'], ch)
        tokens[ch] = tok
        if ch == 'LIDAR_TOP':
            trans, rot, k = LIDAR_CALIB['translation'], LIDAR_CALIB[
                'rotation'], []
        else:
            trans, rot, _ = CAMERA_CALIBS[ch]
            k = [[float(v) for v in row] for row in rig.cam2img[ch]]
        tables['calibrated_sensor'].append(dict(
            token=tok, sensor_token=SENSOR_TOKENS[ch], translation=list(trans),
            rotation=list(rot), camera_intrinsic=k))
    return tokens


def _render_frame(out, fr, filename, layout, rig, ground, lidar_dirs, stats,
                  cfg, rng):
    """Ray-cast / render one sensor frame, write its file, return ego pose."""
    ch, t = fr['channel'], (fr['ts'] - cfg['t0']) * 1e-6
    xy, yaw = layout.ego_pose(np.array([t]))
    xy, yaw = xy[0], float(yaw[0])
    origin, rot = rig.pose(ch, xy, yaw)
    boxes = boxes_at(layout, t)
    n_obj = len(layout.objects)
    if ch == 'LIDAR_TOP':
        points, owner = lidar_sweep(origin, rot, lidar_dirs, boxes, ground,
                                    rng)
        points.tofile(osp.join(out, filename))
        if fr['key']:
            owner = owner[(owner >= 0) & (owner < n_obj)]
            stats['lidar'][fr['k']] = np.bincount(owner, minlength=n_obj)
            stats['radar'][fr['k']] = radar_counts(xy, yaw, boxes, n_obj)
    else:
        img, vis, tot = render_camera(origin, rot, rig.cam2img[ch],
                                      cfg['image_size'], rig.rays[ch], boxes,
                                      ground)
        ok, buf = cv2.imencode('.jpg', img[..., ::-1], [
            cv2.IMWRITE_JPEG_QUALITY, cfg['jpeg_quality']])
        if not ok:
            raise RuntimeError(f'JPEG encoding failed for {filename}')
        with open(osp.join(out, filename), 'wb') as fh:
            fh.write(buf.tobytes())
        stats['visible'][fr['k']] += vis[:n_obj]
        stats['total'][fr['k']] += tot[:n_obj]
    return xy, yaw


def simulate_scene(out: str, tables: Dict[str, list], layout: SceneLayout,
                   rig: 'SensorRig', cfg: dict) -> dict:
    """Render all frames of one scene into ``out`` and append its records."""
    seed, index, offset = cfg['seed'], cfg['index'], cfg['offset']
    calib = _calibrated_sensors(tables, cfg, rig)
    frames = _frames(cfg)
    ego_xy, _ = layout.ego_pose(np.array([(f['ts'] - cfg['t0']) * 1e-6
                                          for f in frames]))
    lo, hi = ego_xy.min(0) - GROUND_MARGIN, ego_xy.max(0) + GROUND_MARGIN
    ground = GroundRaster(layout.map_elements, (*lo, *hi))
    lidar_dirs = lidar_directions(cfg['azimuths'])
    shape = (cfg['keyframes'], len(layout.objects))
    stats = dict(lidar=np.zeros(shape, np.int64),
                 radar=np.zeros(shape, np.int64),
                 visible=np.zeros(shape), total=np.zeros(shape))
    sample_tok = [make_token(seed, 'sample', index, k)
                  for k in range(cfg['keyframes'])]
    last = {}  # channel -> its latest sample_data record
    for f_idx, fr in enumerate(frames):
        ch = fr['channel']
        folder = 'samples' if fr['key'] else 'sweeps'
        ext = 'pcd.bin' if ch == 'LIDAR_TOP' else 'jpg'
        filename = f'{folder}/{ch}/{cfg["log"]["logfile"]}__{ch}__{fr["ts"]}.{ext}'
        os.makedirs(osp.join(out, folder, ch), exist_ok=True)
        rng = np.random.default_rng([seed, index, f_idx])
        xy, yaw = _render_frame(out, fr, filename, layout, rig, ground,
                                lidar_dirs, stats, cfg, rng)
        tok = make_token(seed, 'sample_data', index, f_idx)
        tables['ego_pose'].append(dict(
            token=tok, timestamp=fr['ts'], rotation=list(yaw_to_quat(yaw)),
            translation=[float(xy[0] + offset[0]), float(xy[1] + offset[1]),
                         0.0]))
        w, h = cfg['image_size'] if ch != 'LIDAR_TOP' else (0, 0)
        rec = dict(token=tok, sample_token=sample_tok[fr['k']],
                   ego_pose_token=tok, calibrated_sensor_token=calib[ch],
                   timestamp=fr['ts'], fileformat=ext.split('.')[0],
                   is_key_frame=fr['key'], height=h, width=w,
                   filename=filename, prev='', next='')
        if ch in last:
            rec['prev'], last[ch]['next'] = last[ch]['token'], tok
        last[ch] = rec
        tables['sample_data'].append(rec)
    return _scene_records(tables, layout, cfg, sample_tok, stats)


def _scene_records(tables, layout, cfg, sample_tok, stats) -> dict:
    """scene and sample records, then the annotations."""
    seed, index = cfg['seed'], cfg['index']
    n_key = cfg['keyframes']
    scene_tok = make_token(seed, 'scene', index)
    for k in range(n_key):
        tables['sample'].append(dict(
            token=sample_tok[k], timestamp=cfg['t0'] + k * cfg['keyframe_us'],
            prev=sample_tok[k - 1] if k else '',
            next=sample_tok[k + 1] if k + 1 < n_key else '',
            scene_token=scene_tok))
    tables['scene'].append(dict(
        token=scene_tok, log_token=cfg['log']['token'], nbr_samples=n_key,
        first_sample_token=sample_tok[0], last_sample_token=sample_tok[-1],
        name=cfg['name'], description='Synthetic: curved road, diagonal '
        'T-junction, zebra crossing, car park, construction zone, wavy '
        'service road'))
    counts = _annotation_records(tables, layout, cfg, sample_tok, stats) \
        if cfg['annotate'] else {}
    return dict(token=scene_tok, num_samples=n_key,
                num_annotations=sum(counts.values()), class_counts=counts)


def _annotation_records(tables, layout, cfg, sample_tok, stats) -> dict:
    """instance and sample_annotation records. An object is annotated from
    the first to the last keyframe where it has LiDAR or radar returns."""
    seed, index, offset = cfg['seed'], cfg['index'], cfg['offset']
    cat_tok = {r['name']: r['token'] for r in tables['category']}
    attr_tok = {r['name']: r['token'] for r in tables['attribute']}
    times = np.arange(cfg['keyframes']) * cfg['keyframe_us'] * 1e-6
    boxes = [boxes_at(layout, t, with_buildings=False) for t in times]
    present = (stats['lidar'] + stats['radar']) > 0
    with np.errstate(invalid='ignore', divide='ignore'):
        vis = np.nan_to_num(stats['visible'] / stats['total'])
    counts = {}
    for i, obj in enumerate(layout.objects):
        keys = np.flatnonzero(present[:, i])
        if not len(keys):
            continue
        keys = range(keys[0], keys[-1] + 1)
        inst = make_token(seed, 'instance', index, i)
        ann = [make_token(seed, 'sample_annotation', index, i, k) for k in keys]
        attr = attribute_name(obj.cls, obj.track.state)
        for j, k in enumerate(keys):
            tables['sample_annotation'].append(dict(
                token=ann[j], sample_token=sample_tok[k], instance_token=inst,
                visibility_token=visibility_token(vis[k, i]),
                attribute_tokens=[attr_tok[attr]] if attr else [],
                translation=[float(v) for v in boxes[k]['centre'][i] + offset],
                size=list(obj.size),
                rotation=list(yaw_to_quat(float(boxes[k]['yaw'][i]))),
                prev=ann[j - 1] if j else '',
                next=ann[j + 1] if j + 1 < len(ann) else '',
                num_lidar_pts=int(stats['lidar'][k, i]),
                num_radar_pts=int(stats['radar'][k, i])))
        tables['instance'].append(dict(
            token=inst, category_token=cat_tok[obj.category],
            nbr_annotations=len(ann), first_annotation_token=ann[0],
            last_annotation_token=ann[-1]))
        counts[obj.cls] = counts.get(obj.cls, 0) + len(ann)
    return counts
