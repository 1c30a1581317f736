"""Road layout, map geometry and traffic of one synthetic nuScenes scene.

Frames:

- ``local``: the scene's map frame, a pure translation of the nuScenes
  ``global`` frame (``global = local + offset``): x east, y north, z up,
  metres; the ground is the plane z = 0. Yaw turns counter-clockwise from +x.
- path coordinates ``(s, d)`` of a :class:`RoadPath`: ``s`` is the arc length
  along the path, ``d`` the signed offset to its left.

A scene is a curved main road (two lanes each way plus parking strips and
walkways) with a T-junction (a diagonal cross street with a ped crossing and
a stop line), a zebra crossing with stop lines, a car park with a driveway and
a wavy service road. Objects move along *tracks* (a path, a lateral offset, a
direction and one speed per track), so objects of one track keep their gaps;
placement is rejection-sampled against every other object at several times.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
from shapely.geometry import Polygon
from shapely.ops import unary_union

# detection class -> nuScenes categories (first is the common one), mean size
# (w, l, h) in metres (close to the nuScenes averages), render colour (RGB),
# LiDAR intensity (0-255).
CLASS_SPECS = {
    'car': (('vehicle.car', ), (1.95, 4.62, 1.73), (40, 80, 220), 30),
    'truck': (('vehicle.truck', ), (2.51, 6.93, 2.84), (220, 50, 40), 35),
    'trailer': (('vehicle.trailer', ), (2.90, 12.29, 3.87), (140, 60, 170),
                35),
    'bus': (('vehicle.bus.rigid', ), (2.95, 11.19, 3.49), (240, 210, 30), 30),
    'construction_vehicle': (('vehicle.construction', ), (2.80, 6.37, 3.19),
                             (150, 120, 20), 40),
    'bicycle': (('vehicle.bicycle', ), (0.60, 1.70, 1.28), (0, 200, 200), 20),
    'motorcycle': (('vehicle.motorcycle', ), (0.77, 2.11, 1.47), (200, 0, 200),
                   25),
    'pedestrian': (('human.pedestrian.adult', 'human.pedestrian.child',
                    'human.pedestrian.construction_worker',
                    'human.pedestrian.police_officer'), (0.67, 0.73, 1.77),
                   (40, 200, 60), 12),
    'traffic_cone': (('movable_object.trafficcone', ), (0.41, 0.41, 1.07),
                     (255, 100, 0), 110),
    'barrier': (('movable_object.barrier', ), (2.53, 0.50, 0.98),
                (235, 235, 235), 80),
}
# evaluation range (m from the ego) per class, as in the devkit's
# detection_cvpr_2019 config
EVAL_RANGE = dict(car=50, truck=50, bus=50, trailer=50, construction_vehicle=50,
                  pedestrian=40, motorcycle=40, bicycle=40, traffic_cone=30,
                  barrier=30)
VEHICLES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle')
CYCLES = ('bicycle', 'motorcycle')

LANE_W = 3.5            # lane width
MAIN_HALF = 2 * LANE_W  # two lanes each way
PARK_HALF = 9.5         # + 2.5 m parking strip: edge of the drivable area
WALK_OUT = 13.0         # + 3.5 m walkway
CROSS_HALF = 4.0        # cross street: one lane each way + shoulder
CROSS_WALK = 3.0
EGO_D = -LANE_W / 2     # ego drives in the inner lane on the right
EGO_SIZE = (1.9, 4.9, 1.7)  # not annotated; used for collision checks only


class RoadPath:
    """A planar path sampled densely, parametrised by arc length ``s``.

    Args:
        s: (P,) increasing arc lengths.
        xy: (P, 2) local-frame points.
        heading: (P,) unwrapped tangent angles (rad).
    """

    def __init__(self, s: np.ndarray, xy: np.ndarray, heading: np.ndarray):
        self.s, self.xy, self.heading = s, xy, heading

    @classmethod
    def from_curvature(cls, start, heading0: float, s_min: float,
                       s_max: float, curvature, step: float = 0.5):
        """Integrate ``curvature(s)`` (1/m) so that ``pose(0) == (start,
        heading0)``."""
        n0, n1 = int(np.ceil(-s_min / step)), int(np.ceil(s_max / step))
        s = np.arange(-n0, n1 + 1) * step
        k = curvature(s)
        theta = np.concatenate([[0.], np.cumsum(0.5 * (k[1:] + k[:-1]) * step)])
        theta = theta - theta[n0] + heading0
        mid = 0.5 * (theta[1:] + theta[:-1])
        steps = np.stack([np.cos(mid), np.sin(mid)], 1) * step
        xy = np.concatenate([[[0., 0.]], np.cumsum(steps, 0)])
        return cls(s, xy - xy[n0] + np.asarray(start, float), theta)

    @classmethod
    def from_points(cls, xy: np.ndarray):
        seg = np.diff(xy, axis=0)
        s = np.concatenate([[0.], np.cumsum(np.hypot(seg[:, 0], seg[:, 1]))])
        grad = np.gradient(xy, s, axis=0)
        return cls(s, xy, np.unwrap(np.arctan2(grad[:, 1], grad[:, 0])))

    @property
    def length(self) -> float:
        return float(self.s[-1] - self.s[0])

    def pose(self, s):
        s = np.asarray(s, float)
        return (np.interp(s, self.s, self.xy[:, 0]),
                np.interp(s, self.s, self.xy[:, 1]),
                np.interp(s, self.s, self.heading))

    def to_xy(self, s, d) -> np.ndarray:
        """Path coordinates -> local (..., 2)."""
        x, y, h = self.pose(s)
        return np.stack([x - d * np.sin(h), y + d * np.cos(h)], -1)

    def polyline(self, s0: float, s1: float, d: float,
                 step: float = 2.0) -> np.ndarray:
        n = max(2, int(np.ceil(abs(s1 - s0) / step)) + 1)
        return self.to_xy(np.linspace(s0, s1, n), d)

    def strip(self, s0: float, s1: float, d0: float, d1: float,
              step: float = 2.0) -> Polygon:
        """The band s0..s1 x d0..d1 as a polygon."""
        return Polygon(np.concatenate([self.polyline(s0, s1, d0, step),
                                       self.polyline(s1, s0, d1, step)]))

    def project(self, xy: np.ndarray, s_guess: float) -> np.ndarray:
        """Arc length of points near ``s_guess`` (locally straight path)."""
        x, y, h = self.pose(s_guess)
        rel = np.asarray(xy, float) - [x, y]
        return s_guess + rel @ np.array([np.cos(h), np.sin(h)])


@dataclass
class Track:
    """Objects on a track share path, lateral offset, direction and speed."""
    name: str
    path: RoadPath
    d: float
    direction: int
    speed: float
    s_range: Tuple[float, float]
    classes: Tuple[str, ...]
    state: str  # moving | parked | stopped | standing
    yaw_offset: float = 0.0
    forbidden: List[Tuple[float, float]] = field(default_factory=list)


@dataclass
class SceneObject:
    cls: str
    category: str
    size: Tuple[float, float, float]  # w, l, h
    track: Track
    s0: float
    colour: np.ndarray
    intensity: float

    def poses(self, times: np.ndarray):
        """(T, 2) centre xy and (T,) yaw at times (s from scene start)."""
        tr = self.track
        s = self.s0 + tr.direction * tr.speed * np.asarray(times, float)
        x, y, h = tr.path.pose(s)
        yaw = h + (np.pi if tr.direction < 0 else 0.) + tr.yaw_offset
        xy = tr.path.to_xy(s, tr.d)
        return xy, yaw


def polygons_of(geom) -> List[Polygon]:
    """Polygon parts of a shapely geometry, largest first, slivers dropped."""
    if geom.is_empty:
        return []
    parts = list(geom.geoms) if hasattr(geom, 'geoms') else [geom]
    parts = [p for p in parts if isinstance(p, Polygon) and p.area > 0.5]
    return sorted(parts, key=lambda p: -p.area)


@dataclass
class SceneLayout:
    """Everything static and moving of one scene, in the local frame."""
    main: RoadPath
    ego_speed: float
    map_elements: Dict[str, list]
    tracks: List[Track]
    objects: List[SceneObject] = field(default_factory=list)
    buildings: List[dict] = field(default_factory=list)
    bounds: Tuple[float, float, float, float] = (0., 0., 0., 0.)
    # detection classes the LiDAR sees nowhere within evaluation range
    unseen_classes: List[str] = field(default_factory=list)

    def ego_pose(self, times):
        """(T, 2) ego xy and (T,) yaw: rear axle in the ego lane."""
        s = self.ego_speed * np.asarray(times, float)
        x, y, h = self.main.pose(s)
        return self.main.to_xy(s, EGO_D), h


def _uniform(rng, lo, hi) -> float:
    return float(rng.uniform(lo, hi))


def build_road_map(rng: np.random.Generator, travel: float,
                   duration: float) -> Tuple[Dict[str, RoadPath], dict, dict]:
    """Lay out the roads of one scene around the ego path s in [0, travel].

    Returns:
        paths: 'main', 'cross', 'service' RoadPaths.
        info: key arc lengths (intersection, zebra, car park ...).
        elements: map records per map-expansion layer, local frame.
    """
    reach = 160.0 + 12.0 * duration
    k0, k1 = _uniform(rng, -1 / 400, 1 / 400), _uniform(rng, 0, 1 / 250)
    lam, phase = _uniform(rng, 150, 300), _uniform(rng, 0, 2 * np.pi)
    main = RoadPath.from_curvature(
        (0., 0.), _uniform(rng, -np.pi, np.pi), -reach, travel + reach,
        lambda s: k0 + k1 * np.sin(2 * np.pi * s / lam + phase))
    s_lo, s_hi = main.s[0] + 5, main.s[-1] - 5
    # T-junction on the left, at a diagonal angle alpha to the main road.
    s_x = travel / 2 + _uniform(rng, 15, 35)
    alpha = np.pi / 2 + _uniform(rng, -0.35, 0.35)
    kc = _uniform(rng, -1 / 400, 1 / 400)
    x, y, h = main.pose(s_x)
    cross_len = 100 + 10 * duration
    cross = RoadPath.from_curvature((x, y), h + alpha, 0, cross_len,
                                    lambda s: np.full_like(s, kc))
    sin_a, cos_a = np.sin(alpha), abs(np.cos(alpha))
    sc_edge = (PARK_HALF + CROSS_HALF * cos_a) / sin_a + 0.5
    sc_walk = (WALK_OUT + (CROSS_HALF + CROSS_WALK) * cos_a) / sin_a + 0.5
    corner = cross.strip(0, sc_walk, -CROSS_HALF - CROSS_WALK,
                         CROSS_HALF + CROSS_WALK)
    s_proj = main.project(np.asarray(corner.exterior.coords), s_x)
    s_i0, s_i1 = float(s_proj.min()) - 0.5, float(s_proj.max()) + 0.5
    s_z = s_x - _uniform(rng, 30, 40)  # zebra crossing, before the junction
    s_cp = travel / 2 + _uniform(rng, -30, -6)  # car park on the right
    s_dw = s_cp + 15
    if abs(s_dw + 3 - (s_z + 2)) < 12:
        s_cp, s_dw = s_cp - 24, s_dw - 24
    # Wavy service road on the right: its divider leaves and re-enters
    # 100 m BEV patches, so clipped dividers become MultiLineStrings.
    amp, wave = _uniform(rng, 5, 7), _uniform(rng, 50, 80)
    ph = _uniform(rng, 0, 2 * np.pi)
    ss = np.arange(s_lo, s_hi, 1.0)
    service = RoadPath.from_points(
        main.to_xy(ss, -(48 + amp * np.sin(2 * np.pi * ss / wave + ph))))
    paths = dict(main=main, cross=cross, service=service)
    info = dict(s_lo=s_lo, s_hi=s_hi, s_x=s_x, s_i0=s_i0, s_i1=s_i1, s_z=s_z,
                s_cp=s_cp, s_dw=s_dw, sc_edge=sc_edge, sc_walk=sc_walk,
                cross_len=cross_len)
    elements = _map_elements(paths, info)
    return paths, info, elements


def _segment_of(polygon, segments) -> int:
    areas = [polygon.intersection(seg['polygon']).area for seg in segments]
    return int(np.argmax(areas))


def _roads(paths, info, elements):
    """road_segment, road_block and drivable_area records."""
    main, cross, service = paths['main'], paths['cross'], paths['service']
    lo, hi, i0, i1 = info['s_lo'], info['s_hi'], info['s_i0'], info['s_i1']
    clen = info['cross_len']
    junction = unary_union([main.strip(i0, i1, -PARK_HALF, PARK_HALF),
                            cross.strip(0, info['sc_edge'], -CROSS_HALF,
                                        CROSS_HALF)])
    cross_seg = polygons_of(cross.strip(0, clen, -CROSS_HALF, CROSS_HALF)
                            .difference(junction))[0]
    parts = [(main, lo, i0, PARK_HALF,
              main.strip(lo, i0, -PARK_HALF, PARK_HALF), False),
             (None, 0, 0, 0, polygons_of(junction)[0], True),
             (main, i1, hi, PARK_HALF,
              main.strip(i1, hi, -PARK_HALF, PARK_HALF), False),
             (cross, info['sc_edge'], clen, CROSS_HALF, cross_seg, False),
             (service, service.s[0], service.s[-1], LANE_W,
              service.strip(service.s[0], service.s[-1], -LANE_W, LANE_W),
              False)]
    for path, s0, s1, half, poly, is_junction in parts:
        elements['road_segment'].append(
            dict(polygon=poly, is_intersection=is_junction))
        if path is None:
            continue
        seg = len(elements['road_segment']) - 1
        for d0, d1, a, b in ((-half, 0, s0, s1), (0, half, s1, s0)):
            elements['road_block'].append(dict(
                polygon=path.strip(s0, s1, d0, d1), segment=seg,
                edges=(path.to_xy(np.array([a, a]), np.array([d0, d1])),
                       path.to_xy(np.array([b, b]), np.array([d0, d1])))))
    cp, dw = info['s_cp'], info['s_dw']
    elements['carpark_area'].append(dict(
        polygon=main.strip(cp, cp + 36, -31, -15),
        orientation=float(main.pose(cp + 18)[2] + np.pi / 2)))
    drivable = unary_union([main.strip(lo, hi, -PARK_HALF, PARK_HALF),
                            cross.strip(0, clen, -CROSS_HALF, CROSS_HALF),
                            parts[4][4], elements['carpark_area'][0]['polygon'],
                            main.strip(dw, dw + 6, -15.5, -WALK_OUT)])
    elements['drivable_area'] = polygons_of(drivable)


MAP_LAYERS = ('drivable_area', 'road_segment', 'road_block', 'lane',
              'ped_crossing', 'walkway', 'stop_line', 'carpark_area',
              'road_divider', 'lane_divider')


def _map_elements(paths, info) -> dict:
    elements = {name: [] for name in MAP_LAYERS}
    elements['paint'] = []  # render-only road markings: (line, width, rgb)
    _roads(paths, info, elements)
    _crossings_and_walkways(paths, info, elements)
    _lanes_and_dividers(paths, info, elements)
    return elements


def _crossings_and_walkways(paths, info, el):
    main, cross = paths['main'], paths['cross']
    lo, hi, s_z, clen = info['s_lo'], info['s_hi'], info['s_z'], info['cross_len']
    cross_road = cross.strip(0, clen, -CROSS_HALF, CROSS_HALF)
    h = main.pose(s_z + 2)[2]
    el['ped_crossing'].append(dict(
        polygon=main.strip(s_z, s_z + 4, -PARK_HALF, PARK_HALF),
        walk_dir=(-np.sin(h), np.cos(h))))
    xing = polygons_of(main.strip(info['s_i0'] - 5, info['s_i1'] + 5,
                                  PARK_HALF, WALK_OUT).intersection(cross_road))[0]
    h = main.pose(info['s_x'])[2]
    el['ped_crossing'].append(dict(polygon=xing,
                                   walk_dir=(np.cos(h), np.sin(h))))
    for rec in el['ped_crossing']:
        rec['segment'] = _segment_of(rec['polygon'], el['road_segment'])
    s_far = float(cross.project(np.asarray(xing.exterior.coords), 0.).max())
    info['sc_stop'] = s_far + 1.0
    el['stop_line'] += [
        dict(polygon=main.strip(s_z - 2.5, s_z - 1.5, -MAIN_HALF, 0),
             crossing=0),
        dict(polygon=main.strip(s_z + 5.5, s_z + 6.5, 0, MAIN_HALF),
             crossing=0),
        dict(polygon=cross.strip(s_far + 1, s_far + 2, 0, CROSS_HALF),
             crossing=1)]
    for rec in el['stop_line']:
        rec['block'] = _segment_of(rec['polygon'], el['road_block'])
    # the right walkway runs on across the car-park driveway
    walks = [main.strip(lo, hi, -WALK_OUT, -PARK_HALF),
             main.strip(lo, hi, PARK_HALF, WALK_OUT).difference(cross_road)]
    main_region = main.strip(lo, hi, -WALK_OUT, WALK_OUT)
    for d0, d1 in ((CROSS_HALF, CROSS_HALF + CROSS_WALK),
                   (-CROSS_HALF - CROSS_WALK, -CROSS_HALF)):
        walks.append(cross.strip(0, clen, d0, d1).difference(main_region))
    el['walkway'] = [p for w in walks for p in polygons_of(w)]


def _lanes_and_dividers(paths, info, el):
    main, cross, service = paths['main'], paths['cross'], paths['service']
    lo, hi, i0, i1 = info['s_lo'], info['s_hi'], info['s_i0'], info['s_i1']
    clen, sv0, sv1 = info['cross_len'], service.s[0], service.s[-1]

    def divider(layer, path, pieces, d):
        idx = []
        for s0, s1 in pieces:
            el[layer].append(dict(line=path.polyline(s0, s1, d)))
            idx.append(len(el[layer]) - 1)
            if layer == 'lane_divider':  # dashed white
                for a in np.arange(s0, s1 - 1, 9.0):
                    el['paint'].append((path.polyline(a, min(a + 3, s1), d,
                                                      1.0), 0.15, 'white'))
            else:  # double yellow
                for off in (-0.15, 0.15):
                    el['paint'].append((path.polyline(s0, s1, d + off, 1.0),
                                        0.12, 'yellow'))
        return (layer, idx)

    m_rd = divider('road_divider', main, [(lo, i0), (i1, hi)], 0.)
    m_ldr = divider('lane_divider', main, [(lo, hi)], -LANE_W)
    m_ldl = divider('lane_divider', main, [(lo, i0), (i1, hi)], LANE_W)
    c_rd = divider('road_divider', cross, [(info['sc_stop'] + 1, clen)], 0.)
    s_rd = divider('road_divider', service, [(sv0, sv1)], 0.)
    # path, s range, d range, direction, boundary refs at d0 and d1
    specs = [(main, lo, hi, -MAIN_HALF, -LANE_W, 1, None, m_ldr),
             (main, lo, hi, -LANE_W, 0., 1, m_ldr, m_rd),
             (main, lo, hi, 0., LANE_W, -1, m_rd, m_ldl),
             (main, lo, hi, LANE_W, MAIN_HALF, -1, m_ldl, None),
             (cross, info['sc_edge'], clen, -LANE_W, 0., 1, None, c_rd),
             (cross, info['sc_edge'], clen, 0., LANE_W, -1, c_rd, None),
             (service, sv0, sv1, -LANE_W, 0., 1, None, s_rd),
             (service, sv0, sv1, 0., LANE_W, -1, s_rd, None)]
    for path, s0, s1, d0, d1, direction, b0, b1 in specs:
        a, b = (s0, s1) if direction > 0 else (s1, s0)
        edges = tuple(path.to_xy(np.array([s, s]), np.array([d0, d1]))
                      for s in (a, b))
        el['lane'].append(dict(
            polygon=path.strip(s0, s1, d0, d1),
            centre=path.polyline(a, b, (d0 + d1) / 2, 5.0),
            left=b1 if direction > 0 else b0,
            right=b0 if direction > 0 else b1,
            edges=edges))
