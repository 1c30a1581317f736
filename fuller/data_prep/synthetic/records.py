"""nuScenes records of the synthetic dataset: map-expansion JSON (schema
v1.3, as read by ``nuscenes.map_expansion.map_api.NuScenesMap``), the
semantic-prior map PNG and the static tables (category, attribute,
visibility, sensor).

Frames: map records are written in the nuScenes ``global`` frame
(``global = local + offset`` per scene, metres, x east, y north).
"""
import hashlib
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
from shapely.geometry import LineString

from .sensors import SENSOR_TOKENS

MAP_VERSION = '1.3'
MAP_RESOLUTION = 0.1  # m per pixel of the semantic-prior PNG (devkit MapMask)
CATEGORIES = (
    'human.pedestrian.adult', 'human.pedestrian.child',
    'human.pedestrian.wheelchair', 'human.pedestrian.stroller',
    'human.pedestrian.personal_mobility', 'human.pedestrian.police_officer',
    'human.pedestrian.construction_worker', 'animal', 'vehicle.car',
    'vehicle.motorcycle', 'vehicle.bicycle', 'vehicle.bus.bendy',
    'vehicle.bus.rigid', 'vehicle.truck', 'vehicle.construction',
    'vehicle.emergency.ambulance', 'vehicle.emergency.police',
    'vehicle.trailer', 'movable_object.barrier', 'movable_object.trafficcone',
    'movable_object.pushable_pullable', 'movable_object.debris',
    'static_object.bicycle_rack')
ATTRIBUTES = ('vehicle.moving', 'vehicle.stopped', 'vehicle.parked',
              'cycle.with_rider', 'cycle.without_rider',
              'pedestrian.sitting_lying_down', 'pedestrian.standing',
              'pedestrian.moving')
VISIBILITY_LEVELS = (('1', 'v0-40', 0.0), ('2', 'v40-60', 0.4),
                     ('3', 'v60-80', 0.6), ('4', 'v80-100', 0.8))


def make_token(*parts) -> str:
    """32-hex token, a pure function of its parts."""
    return hashlib.md5('/'.join(map(str, parts)).encode()).hexdigest()


def static_tables() -> Dict[str, list]:
    """category, attribute, visibility and sensor tables (seed independent)."""
    return dict(
        category=[dict(token=make_token('category', n), name=n,
                       description=f'nuScenes category {n}.')
                  for n in CATEGORIES],
        attribute=[dict(token=make_token('attribute', n), name=n,
                        description=f'nuScenes attribute {n}.')
                   for n in ATTRIBUTES],
        visibility=[dict(token=t, level=level,
                         description=f'visibility of whole object is between '
                         f'{level[1:].replace("-", " and ")}%')
                    for t, level, _ in VISIBILITY_LEVELS],
        sensor=[dict(token=tok, channel=ch,
                     modality='lidar' if ch.startswith('LIDAR') else 'camera')
                for ch, tok in SENSOR_TOKENS.items()])


def attribute_name(cls: str, state: str) -> str:
    """nuScenes attribute of a detection class in a track state
    ('' for classes without attributes)."""
    if cls in ('traffic_cone', 'barrier'):
        return ''
    if cls == 'pedestrian':
        return 'pedestrian.moving' if state == 'moving' else \
            'pedestrian.standing'
    if cls in ('bicycle', 'motorcycle'):
        return 'cycle.without_rider' if state == 'static' else \
            'cycle.with_rider'
    return dict(moving='vehicle.moving', stopped='vehicle.stopped',
                static='vehicle.parked')[state]


def visibility_token(fraction: float) -> str:
    return [t for t, _, lo in VISIBILITY_LEVELS if fraction >= lo][-1]


class MapExpansion:
    """Accumulates the map-expansion layers of one location."""

    LAYERS = ('polygon', 'line', 'node', 'drivable_area', 'road_segment',
              'road_block', 'lane', 'ped_crossing', 'walkway', 'stop_line',
              'carpark_area', 'road_divider', 'lane_divider', 'traffic_light',
              'lane_connector')

    def __init__(self, location: str, seed: int):
        self.location, self.seed = location, seed
        self.layers = {name: [] for name in self.LAYERS}
        self.arcline_path_3, self.connectivity = {}, {}
        self.drivable_polygons: List = []  # global frame, for the PNG

    def _token(self, kind: str) -> str:
        return make_token('map', self.seed, self.location, kind,
                          len(self.layers.get(kind, self.arcline_path_3)))

    def _nodes(self, xy) -> List[str]:
        tokens = []
        for x, y in np.asarray(xy, float)[:, :2]:
            tok = self._token('node')
            self.layers['node'].append(dict(token=tok, x=round(float(x), 4),
                                            y=round(float(y), 4)))
            tokens.append(tok)
        return tokens

    def _polygon(self, poly, offset) -> str:
        tok = self._token('polygon')

        def ring(r):  # shapely rings repeat the first point; nodes do not
            return np.asarray(r.coords)[:-1] + offset

        holes = [dict(node_tokens=self._nodes(ring(r)))
                 for r in poly.interiors]
        self.layers['polygon'].append(dict(
            token=tok, exterior_node_tokens=self._nodes(ring(poly.exterior)),
            holes=holes))
        return tok

    def _line(self, xy, offset) -> Tuple[str, List[str]]:
        tok = self._token('line')
        nodes = self._nodes(np.asarray(xy) + offset)
        self.layers['line'].append(dict(token=tok, node_tokens=nodes))
        return tok, nodes

    def _add(self, layer: str, **fields) -> str:
        tok = self._token(layer)
        self.layers[layer].append(dict(token=tok, **fields))
        return tok

    def add_scene(self, el: dict, offset: Sequence[float]):
        """Add the map elements of one scene placed at ``offset``."""
        off = np.asarray(offset, float)[:2]
        drivable = [self._add('drivable_area',
                              polygon_tokens=[self._polygon(p, off)])
                    for p in el['drivable_area']]
        self.drivable_polygons += [(p, off) for p in el['drivable_area']]
        seg_tok = []
        for rec in el['road_segment']:
            areas = [rec['polygon'].intersection(p).area
                     for p in el['drivable_area']]
            seg_tok.append(self._add(
                'road_segment', polygon_token=self._polygon(rec['polygon'], off),
                is_intersection=bool(rec['is_intersection']),
                drivable_area_token=drivable[int(np.argmax(areas))]))
        block_tok = [self._add(
            'road_block', polygon_token=self._polygon(rec['polygon'], off),
            from_edge_line_token=self._line(rec['edges'][0], off)[0],
            to_edge_line_token=self._line(rec['edges'][1], off)[0],
            road_segment_token=seg_tok[rec['segment']])
            for rec in el['road_block']]
        xing_tok = [self._add(
            'ped_crossing', polygon_token=self._polygon(rec['polygon'], off),
            road_segment_token=seg_tok[rec['segment']])
            for rec in el['ped_crossing']]
        for poly in el['walkway']:
            self._add('walkway', polygon_token=self._polygon(poly, off))
        for rec in el['stop_line']:
            self._add('stop_line', polygon_token=self._polygon(rec['polygon'],
                                                               off),
                      stop_line_type='PED_CROSSING',
                      ped_crossing_tokens=[xing_tok[rec['crossing']]],
                      traffic_light_tokens=[],
                      road_block_token=block_tok[rec['block']])
        for rec in el['carpark_area']:
            self._add('carpark_area',
                      polygon_token=self._polygon(rec['polygon'], off),
                      orientation=float(rec['orientation']),
                      road_block_token='')
        self._dividers_and_lanes(el, off, seg_tok)

    def _dividers_and_lanes(self, el, off, seg_tok):
        ref_nodes = {}
        for i, rec in enumerate(el['road_divider']):
            line = LineString(rec['line'])
            seg = int(np.argmax([line.intersection(s['polygon']).length
                                 for s in el['road_segment']]))
            tok, ref_nodes[('road_divider', i)] = self._line(rec['line'], off)
            self._add('road_divider', line_token=tok,
                      road_segment_token=seg_tok[seg])
        for i, rec in enumerate(el['lane_divider']):
            tok, nodes = self._line(rec['line'], off)
            ref_nodes[('lane_divider', i)] = nodes
            self._add('lane_divider', line_token=tok, lane_divider_segments=[
                dict(node_token=n, segment_type='DOUBLE_DASHED_WHITE')
                for n in nodes])

        def segments(ref, kind):
            if ref is None:
                return []
            layer, idx = ref
            return [dict(node_token=n, segment_type=kind)
                    for i in idx for n in ref_nodes[(layer, i)]]

        for rec in el['lane']:
            tok = self._add(
                'lane', polygon_token=self._polygon(rec['polygon'], off),
                lane_type='CAR',
                from_edge_line_token=self._line(rec['edges'][0], off)[0],
                to_edge_line_token=self._line(rec['edges'][1], off)[0],
                left_lane_divider_segments=segments(rec['left'], 'SOLID'),
                right_lane_divider_segments=segments(rec['right'], 'SOLID'))
            self.arcline_path_3[tok] = arcline_pieces(rec['centre'] + off)
            self.connectivity[tok] = dict(incoming=[], outgoing=[])

    def to_json(self, canvas_edge: Tuple[float, float]) -> dict:
        out = dict(version=MAP_VERSION)
        out.update(self.layers)
        out.update(canvas_edge=[float(canvas_edge[0]), float(canvas_edge[1])],
                   arcline_path_3=self.arcline_path_3,
                   connectivity=self.connectivity)
        return out

    def semantic_prior_png(self, canvas_edge) -> bytes:
        """The basemap PNG (0.1 m/px, 255 on the drivable area; row 0 is the
        largest y), as read by the devkit's MapMask."""
        w = int(np.ceil(canvas_edge[0] / MAP_RESOLUTION))
        h = int(np.ceil(canvas_edge[1] / MAP_RESOLUTION))
        img = np.zeros((h, w), np.uint8)
        for poly, off in self.drivable_polygons:
            pts = []
            for ring in [poly.exterior] + list(poly.interiors):
                xy = np.asarray(ring.coords)[:, :2] + off
                px = np.stack([xy[:, 0], -xy[:, 1]], 1) / MAP_RESOLUTION
                pts.append(np.round((px + [0, h]) * 8).astype(np.int32))
            cv2.fillPoly(img, pts, 255, cv2.LINE_8, 3)
        ok, buf = cv2.imencode('.png', img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        assert ok
        return buf.tobytes()


def arcline_pieces(centre: np.ndarray) -> List[dict]:
    """A lane centreline as straight arcline pieces ('LSL' with only the
    straight part), readable by ``arcline_path_utils.discretize_lane``."""
    pieces = []
    for a, b in zip(centre[:-1], centre[1:]):
        yaw = float(np.arctan2(b[1] - a[1], b[0] - a[0]))
        length = float(np.hypot(*(b - a)))
        pose = [round(float(a[0]), 4), round(float(a[1]), 4), yaw]
        end = [round(float(b[0]), 4), round(float(b[1]), 4), yaw]
        pieces.append(dict(start_pose=pose, end_pose=end, shape='LSL',
                           radius=999.0, segment_length=[0.0, length, 0.0]))
    return pieces
