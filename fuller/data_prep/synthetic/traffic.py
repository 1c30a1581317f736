"""Traffic and buildings of one synthetic nuScenes scene.

Frames: ``local`` (see :mod:`fuller.data_prep.synthetic.scene`); times ``t``
are seconds from the scene start. Boxes are (centre xyz, size (w, l, h), yaw)
with the centre at half height above the ground plane z = 0, ``l`` along
the heading, as in nuScenes ``sample_annotation`` records.

Objects are placed on *tracks* (see :class:`Track`) by rejection sampling:
a candidate is kept only if its footprint, grown by a safety margin
(0.6 m along, 0.05 m across its heading; 6 m more ahead of and behind the
ego vehicle), misses
the ego vehicle and every placed object at every checked time, and if its
extent along the track avoids the track's forbidden intervals (junction,
zebra, driveway).
"""
from typing import Dict, List

import numpy as np
from shapely.geometry import Polygon
from shapely.ops import unary_union

from .scene import (CLASS_SPECS, CROSS_HALF, CROSS_WALK, CYCLES, EGO_D,
                    EGO_SIZE, LANE_W, VEHICLES, WALK_OUT, SceneLayout,
                    SceneObject, Track)

# instances per scene for objects_scale=1 (first one of each class is placed
# within the evaluation range of the ego path)
DEFAULT_QUOTAS = dict(car=14, truck=3, bus=2, trailer=2, construction_vehicle=1,
                      bicycle=3, motorcycle=3, pedestrian=14, traffic_cone=5,
                      barrier=3)
PEDESTRIAN_CATEGORIES = ((0.80, 'human.pedestrian.adult'),
                         (0.08, 'human.pedestrian.child'),
                         (0.08, 'human.pedestrian.construction_worker'),
                         (0.04, 'human.pedestrian.police_officer'))
MARGIN_LON, MARGIN_LAT = 0.6, 0.05  # free space around footprints (m)
EGO_GAP = 6.0  # extra free length ahead of and behind the ego vehicle (m)


def rect_corners(xy: np.ndarray, yaw: np.ndarray, length, width) -> np.ndarray:
    """(..., 4, 2) corners of oriented rectangles."""
    c, s = np.cos(yaw)[..., None], np.sin(yaw)[..., None]
    lx = np.array([1, 1, -1, -1]) * np.asarray(length)[..., None] / 2
    ly = np.array([1, -1, -1, 1]) * np.asarray(width)[..., None] / 2
    return np.stack([xy[..., :1] + c * lx - s * ly,
                     xy[..., 1:] + s * lx + c * ly], -1)


def rects_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Separating-axis test for rectangles a (..., 4, 2) and b (..., 4, 2)."""
    hit = np.ones(np.broadcast_shapes(a.shape, b.shape)[:-2], bool)
    for rect in (a, b):
        for i in (0, 1):
            axis = rect[..., i + 1, :] - rect[..., i, :]
            pa = np.einsum('...kj,...j->...k', a, axis)
            pb = np.einsum('...kj,...j->...k', b, axis)
            hit &= (pa.max(-1) >= pb.min(-1)) & (pb.max(-1) >= pa.min(-1))
    return hit


def _u(rng, lo, hi) -> float:
    return float(rng.uniform(lo, hi))


def build_tracks(rng, paths, info, travel: float, ego_speed: float,
                 duration: float) -> List[Track]:
    """All tracks of a scene: main road, cross street, car park, service."""
    return (_main_road_tracks(rng, paths['main'], info, travel, ego_speed) +
            _side_tracks(rng, paths, info, travel, duration))


def _main_road_tracks(rng, main, info, travel: float,
                      ego_speed: float) -> List[Track]:
    """Four lanes, then per side: parking strip (vehicles, cones,
    barriers) and walkway sublanes (two static, two moving, a fence line)."""
    near = (-30.0, travel + 50.0)
    junction = (info['s_i0'] - 2, info['s_i1'] + 2)
    zebra = (info['s_z'] - 7, info['s_z'] + 10)
    drive = (info['s_dw'] - 2, info['s_dw'] + 8)
    road = VEHICLES + CYCLES
    tracks = [
        Track('lane_r_outer', main, -1.5 * LANE_W, 1, _u(rng, 4, 7), near, road,
              'moving'),
        Track('lane_r_inner', main, EGO_D, 1, ego_speed, near,
              ('car', 'truck', 'bus', 'motorcycle'), 'moving'),
        Track('lane_l_inner', main, LANE_W / 2, -1, _u(rng, 6, 11),
              (near[0], near[1] + 40), ('car', 'truck', 'bus', 'trailer',
                                        'motorcycle'), 'moving'),
        Track('lane_l_outer', main, 1.5 * LANE_W, -1, _u(rng, 4, 7),
              (near[0], near[1] + 30), road, 'moving')]
    for side in (-1, 1):
        forb = [zebra, junction if side > 0 else drive]
        walk_forb = [junction if side > 0 else drive]
        tracks += [
            Track(f'park_{side}', main, side * 8.25, 1, 0., near,
                  ('car', 'truck', 'construction_vehicle', 'trailer'),
                  'static', forbidden=forb),
            Track(f'cone_{side}', main, side * 7.45, 1, 0., near,
                  ('traffic_cone', ), 'static', forbidden=forb),
            Track(f'barrier_{side}', main, side * 9.05, 1, 0., near,
                  ('barrier', ), 'static', np.pi / 2, forbidden=forb),
            Track(f'walk_curb_{side}', main, side * 10.0, 1, 0., near,
                  ('pedestrian', 'traffic_cone'), 'static',
                  forbidden=walk_forb),
            Track(f'walk_a_{side}', main, side * 10.85, 1, _u(rng, 1.0, 1.6),
                  near, ('pedestrian', ), 'moving'),
            Track(f'walk_b_{side}', main, side * 11.7, -1, _u(rng, 1.0, 1.6),
                  (near[0], near[1] + 10), ('pedestrian', ), 'moving'),
            Track(f'walk_wall_{side}', main, side * 12.55, 1, 0., near,
                  ('pedestrian', 'bicycle', 'motorcycle'), 'static',
                  forbidden=walk_forb),
            Track(f'fence_{side}', main, side * 12.6, 1, 0., near,
                  ('barrier', ), 'static', np.pi / 2, forbidden=walk_forb)]
    return tracks


def _side_tracks(rng, paths, info, travel: float,
                 duration: float) -> List[Track]:
    """Cross street (a queue at the stop line, outgoing traffic, walkers),
    car-park rows and the service road."""
    main, cross, service = paths['main'], paths['cross'], paths['service']
    road = VEHICLES + CYCLES
    sc_stop, sc_walk = info['sc_stop'], info['sc_walk']
    cw = CROSS_HALF + CROSS_WALK / 2
    tracks = [
        Track('cross_in', cross, LANE_W / 2, -1, 0., (sc_stop + 1, sc_stop + 40),
              road, 'stopped'),
        Track('cross_out', cross, -LANE_W / 2, 1, _u(rng, 4, 8),
              (sc_stop + 3, sc_stop + 50), ('car', 'truck', 'bus', 'bicycle',
                                            'motorcycle'), 'moving'),
        Track('cross_walk_l', cross, cw, 1, _u(rng, 1.0, 1.5),
              (sc_walk + 1, sc_walk + 40), ('pedestrian', ), 'moving'),
        Track('cross_walk_r', cross, -cw, 1, 0., (sc_walk + 1, sc_walk + 40),
              ('pedestrian', ), 'static')]
    for d in (-18.5, -27.5):
        tracks.append(Track(f'carpark_{d}', main, d, 1, 0.,
                            (info['s_cp'] + 1, info['s_cp'] + 35),
                            ('car', 'truck', 'construction_vehicle'), 'static',
                            np.pi / 2))
    start = main.to_xy(0., EGO_D)
    i = int(np.argmin(np.hypot(*(service.xy - start).T)))
    s_sv = float(service.s[i])
    rng_sv = (max(service.s[0] + 15 * duration, s_sv - 40),
              min(service.s[-1] - 15 * duration, s_sv + travel + 60))
    tracks += [Track('service_a', service, -LANE_W / 2, 1, _u(rng, 5, 9),
                     rng_sv, ('car', 'truck', 'motorcycle'), 'moving'),
               Track('service_b', service, LANE_W / 2, -1, _u(rng, 5, 9),
                     rng_sv, ('car', 'bus', 'bicycle'), 'moving')]
    return tracks


class Placer:
    """Rejection sampler that keeps placed footprints apart at all times."""

    def __init__(self, rng, layout: SceneLayout, times: np.ndarray):
        self.rng, self.layout, self.times = rng, layout, times
        ego_xy, ego_yaw = layout.ego_pose(times)
        fwd = np.stack([np.cos(ego_yaw), np.sin(ego_yaw)], -1)
        ego = rect_corners(ego_xy + 1.4 * fwd, ego_yaw,
                           EGO_SIZE[1] + 2 * (MARGIN_LON + EGO_GAP),
                           EGO_SIZE[0] + 2 * MARGIN_LAT)
        self.footprints = [ego]  # each (T, 4, 2)

    def _make(self, cls: str, track: Track, s0: float) -> SceneObject:
        rng = self.rng
        cats, size, colour, intensity = CLASS_SPECS[cls]
        category, scale = cats[0], np.array([1.0, 1.0, 1.0])
        if cls == 'pedestrian':
            p = rng.uniform()
            acc = np.cumsum([w for w, _ in PEDESTRIAN_CATEGORIES])
            category = PEDESTRIAN_CATEGORIES[int(np.searchsorted(acc, p))][1]
            if category.endswith('child'):
                scale = np.array([0.75, 0.75, 0.7])
        jitter = 0.04 if cls == 'traffic_cone' else 0.08
        size = tuple(float(v) for v in np.round(
            np.asarray(size) * scale * rng.uniform(1 - jitter, 1 + jitter, 3),
            3))
        rgb = np.clip(np.asarray(colour) * rng.uniform(0.9, 1.1), 0, 255)
        return SceneObject(cls, category, size, track, float(s0), rgb,
                           float(intensity * rng.uniform(0.8, 1.2)))

    def try_place(self, cls: str, track: Track, s0: float) -> bool:
        obj = self._make(cls, track, s0)
        w, l, _ = obj.size
        along = w if track.yaw_offset else l
        lo, hi = s0 - along / 2, s0 + along / 2
        if lo < track.s_range[0] or hi > track.s_range[1]:
            return False
        if any(lo < b and hi > a for a, b in track.forbidden):
            return False
        xy, yaw = obj.poses(self.times)
        rect = rect_corners(xy, yaw, l + 2 * MARGIN_LON, w + 2 * MARGIN_LAT)
        others = np.stack(self.footprints)  # (N, T, 4, 2)
        if rects_overlap(others, rect[None]).any():
            return False
        self.footprints.append(rect)
        self.layout.objects.append(obj)
        return True

    def place(self, cls: str, tracks: List[Track], window=None,
              attempts: int = 40) -> bool:
        cands = [t for t in tracks if cls in t.classes]
        if window is not None:
            cands = [t for t in cands if t.path is self.layout.main]
        for _ in range(attempts):
            if not cands:
                return False
            track = cands[int(self.rng.integers(len(cands)))]
            lo, hi = track.s_range if window is None else window
            if self.try_place(cls, track, self.rng.uniform(lo, hi)):
                return True
        return False


def _construction_zone(placer: Placer, by_name: Dict[str, Track],
                       travel: float):
    """A parked construction vehicle fenced by cones and barriers."""
    rng = placer.rng
    for _ in range(30):
        side = int(rng.choice([-1, 1]))
        s_cz = _u(rng, -5, travel + 30)
        if placer.try_place('construction_vehicle', by_name[f'park_{side}'],
                            s_cz):
            break
    else:
        return
    length = placer.layout.objects[-1].size[1]
    for k in range(3):
        placer.try_place('traffic_cone', by_name[f'cone_{side}'],
                         s_cz - length / 2 - 1.5 - 2.0 * k)
    placer.try_place('traffic_cone', by_name[f'cone_{side}'],
                     s_cz + length / 2 + 1.5)
    for off in (-1, 1):
        placer.try_place('barrier', by_name[f'barrier_{side}'],
                         s_cz + off * (length / 2 + 2.0))


def populate(rng, layout: SceneLayout, tracks: List[Track], info: dict,
             travel: float, times: np.ndarray, objects_scale: float) -> Placer:
    """Construction zone, people waiting at the zebra, then class quotas."""
    placer = Placer(rng, layout, times)
    if objects_scale <= 0:
        return placer
    by_name = {t.name: t for t in tracks}
    _construction_zone(placer, by_name, travel)
    for k, s in enumerate((info['s_z'] - 1.0, info['s_z'] + 5.0)):
        placer.try_place('pedestrian', by_name[f'walk_curb_{2 * k - 1}'], s)
    for cls in DEFAULT_QUOTAS:  # one of each class close to the ego path
        placer.place(cls, tracks, (-5.0, travel + 20.0))
    for cls, n in DEFAULT_QUOTAS.items():
        for _ in range(int(round(n * objects_scale)) - 1):
            placer.place(cls, tracks)
    return placer


def place_buildings(rng, paths, info, elements, travel: float) -> List[dict]:
    """Unannotated blocks beside the walkways (occluders, LiDAR returns)."""
    main, cross = paths['main'], paths['cross']
    occupied = unary_union(
        elements['drivable_area'] + elements['walkway'] +
        [r['polygon'] for r in elements['carpark_area']]).buffer(1.0)
    rows = [(main, -90.0, travel + 90.0, side * (WALK_OUT + 1.5), side)
            for side in (-1, 1)]
    rows += [(cross, info['sc_walk'] + 3, info['cross_len'] - 10,
              side * (CROSS_HALF + CROSS_WALK + 1.5), side) for side in (-1, 1)]
    buildings, placed = [], []
    for path, s, s_end, d_near, side in rows:
        while s < s_end:
            length, depth = _u(rng, 10, 28), _u(rng, 8, 16)
            d = d_near + side * (_u(rng, 0, 2.5) + depth / 2)
            xy = path.to_xy(s + length / 2, d)
            yaw = float(path.pose(s + length / 2)[2])
            foot = Polygon(rect_corners(xy, np.array(yaw), length, depth))
            if not foot.intersects(occupied) and not any(
                    foot.intersects(p) for p in placed):
                placed.append(foot)
                grey = _u(rng, 110, 190)
                buildings.append(dict(
                    centre=(float(xy[0]), float(xy[1]), 0.), yaw=yaw,
                    size=(depth, length, _u(rng, 5, 18)),
                    colour=np.array([grey, grey * 0.95, grey * 0.88]),
                    intensity=_u(rng, 30, 50)))
            s += length + _u(rng, 2, 8)
    return buildings


def boxes_at(layout: SceneLayout, t: float,
             with_buildings: bool = True) -> Dict[str, np.ndarray]:
    """All boxes at time t: annotated objects first, then buildings.

    Returns centre (M, 3), size (M, 3) as (w, l, h), yaw (M,), colour (M, 3),
    intensity (M,).
    """
    objs = layout.objects
    centre = np.zeros((len(objs), 3))
    yaw = np.zeros(len(objs))
    for path in {id(o.track.path): o.track.path for o in objs}.values():
        idx = [i for i, o in enumerate(objs) if o.track.path is path]
        tr = [objs[i].track for i in idx]
        direction = np.array([x.direction for x in tr], float)
        s = (np.array([objs[i].s0 for i in idx]) +
             direction * np.array([x.speed for x in tr]) * t)
        centre[idx, :2] = path.to_xy(s, np.array([x.d for x in tr]))
        yaw[idx] = (path.pose(s)[2] + np.pi * (direction < 0) +
                    np.array([x.yaw_offset for x in tr]))
    size = np.array([o.size for o in objs]).reshape(-1, 3)
    centre[:, 2] = size[:, 2] / 2
    out = dict(centre=centre, size=size, yaw=yaw,
               colour=np.array([o.colour for o in objs]).reshape(-1, 3),
               intensity=np.array([o.intensity for o in objs]))
    if with_buildings and layout.buildings:
        b = layout.buildings
        bsize = np.array([x['size'] for x in b])
        bcentre = np.array([x['centre'] for x in b])
        bcentre[:, 2] = bsize[:, 2] / 2
        out = dict(centre=np.concatenate([centre, bcentre]),
                   size=np.concatenate([size, bsize]),
                   yaw=np.concatenate([yaw, [x['yaw'] for x in b]]),
                   colour=np.concatenate([out['colour'],
                                          [x['colour'] for x in b]]),
                   intensity=np.concatenate([out['intensity'],
                                             [x['intensity'] for x in b]]))
    return out
