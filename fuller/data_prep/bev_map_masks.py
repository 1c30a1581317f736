"""BEV map masks per sample, equal to nuscenes-devkit's ``get_map_mask``.

Shape shorthand: C map classes (``MAP_CLASSES``), Y rows (y cells), X columns
(x cells).

Frames: ``global`` (map frame, x east, y north), ``lidar`` (LIDAR_TOP of the
keyframe, x forward, y left) and the devkit's ``patch`` frame: the grid's
centre, turned by the LiDAR yaw, so its axes are the lidar x and y.

The masks are what BEVFusion's map labels are made of:
``NuScenesMap.get_map_mask(patch_box, patch_angle, layers, canvas_size)``
called with ``patch_box = (x, y, height, width)`` = the grid centre in global
xy and the grid's y and x extents, ``patch_angle`` = LiDAR yaw in degrees
(``arctan2`` of the lidar x axis in global, ``/ pi * 180``) and
``canvas_size = (Y, X)``; the divider class is the OR of its two line
layers. The devkit's canvas rows are patch y and its columns patch x, row 0
at the smallest y, so its (Y, X) output is already in the project's
(B, C, Y, X) order (``fuller.structures.frames``) and is stored unchanged
(MIT BEVFusion transposes it to its [x, y] layout; fuller does not).

What each cell means (the devkit's definition, not ``BEVGrid``'s): vertices
are scaled so that canvas point (c, r) is the patch point
``(x_min + c * dx, y_min + r * dy)``, i.e. the *lower-left corner* of
``BEVGrid`` cell (r, c), not its centre. Polygon vertices are rounded to
whole canvas points and filled by ``cv2.fillPoly`` (boundary included,
holes cleared the same way, later polygons' holes clear earlier ones);
line vertices are truncated to int and drawn by ``cv2.polylines`` with
thickness 2.

How it is computed: the devkit's own steps in the devkit's order, on the
records of each layer whose bounding box meets the patch (found with an
STRtree instead of the devkit's loop over every record): intersect with the
turned patch in global coordinates, rotate by ``-patch_angle`` about the
patch centre, translate to it, intersect with the axis-aligned local patch,
translate by half the patch, scale to the canvas, then draw with the
devkit's ``mask_for_polygons`` / ``mask_for_lines``. Only where the devkit
itself fails do we differ: devkit 1.2.0's ``mask_for_lines`` iterates a
MultiLineString directly, which shapely 2 forbids (TypeError), so a divider
that the patch cuts into pieces crashes ``get_map_mask``; here each piece
(LineString or Point) is drawn as the devkit draws that piece alone. Clip
results of a polygon that are not polygonal (a touching edge or corner)
are dropped the same way. The installed devkit is not patched.
"""
import glob
import multiprocessing as mp
import os
import os.path as osp
import weakref
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import shapely
from shapely import STRtree, affinity
from shapely.geometry import MultiPolygon
from tqdm import tqdm

from fuller.utils.map_mask_io import (MAP_CLASSES, MapMaskFileError,
                                      load_map_masks, save_map_masks)
from fuller.structures.frames import BEVGrid
from fuller.structures.nuscenes_world import MAP_GRID

# map class -> devkit layers whose union it is.
MAP_CLASS_LAYERS = {
    'drivable_area': ('drivable_area', ),
    'ped_crossing': ('ped_crossing', ),
    'walkway': ('walkway', ),
    'stop_line': ('stop_line', ),
    'carpark_area': ('carpark_area', ),
    'divider': ('road_divider', 'lane_divider'),
}
LINE_LAYERS = ('road_divider', 'lane_divider')
MAP_EXPANSION = 'nuScenes-map-expansion-v1.3'


def map_expansion_path(root: str, location: str) -> str:
    """Where the devkit's ``NuScenesMap`` reads a location's map json."""
    return osp.join(root, 'maps', 'expansion', f'{location}.json')


def check_map_expansion(root: str, locations: Iterable[str]) -> None:
    """Pre-flight: every location needs its map-expansion json."""
    for location in locations:
        path = map_expansion_path(root, location)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'Map expansion file for location {location!r} not found: '
                f'{path}. Download {MAP_EXPANSION} (nuScenes "Map expansion '
                f'pack (v1.3)", https://www.nuscenes.org/download) and '
                f'extract its expansion/*.json into '
                f'{osp.join(root, "maps", "expansion")}/, or run with '
                f'--skip-map-masks')


def load_nusc_map(root: str, location: str):
    """The devkit's ``NuScenesMap`` of one location (checked first)."""
    check_map_expansion(root, [location])
    from nuscenes.map_expansion.map_api import NuScenesMap
    return NuScenesMap(dataroot=root, map_name=location)


def _devkit_explorer():
    from nuscenes.map_expansion.map_api import NuScenesMapExplorer
    return NuScenesMapExplorer


class MapGeometryIndex:
    """The geometries of each devkit layer of one map, global frame, in the
    devkit's record order, indexed by an STRtree.

    Args:
        nusc_map: a devkit ``NuScenesMap``.
    """

    def __init__(self, nusc_map):
        self.geoms: Dict[str, np.ndarray] = {}
        self.trees: Dict[str, STRtree] = {}
        for layers in MAP_CLASS_LAYERS.values():
            for layer in layers:
                geoms = _layer_geometries(nusc_map, layer)
                self.geoms[layer] = np.array(geoms, dtype=object)
                self.trees[layer] = STRtree(geoms)

    def query(self, layer: str, area) -> np.ndarray:
        """Geometries of ``layer`` whose bounding box meets ``area``'s, in
        record order (later holes clear earlier fills, so order counts)."""
        return self.geoms[layer][np.sort(self.trees[layer].query(area))]


def _layer_geometries(nusc_map, layer: str) -> List:
    """Shapely geometries of every record of a devkit layer, global frame.

    The devkit's choices (``_get_layer_polygon`` / ``_get_layer_line``): every
    polygon of each ``drivable_area`` record, valid polygons only in the
    other polygon layers, non-empty lines. Empty geometries never reach the
    canvas there either, so they are dropped here.
    """
    geoms = []
    for record in getattr(nusc_map, layer):
        if 'line_token' in record:
            parts = [nusc_map.extract_line(record['line_token'])]
        elif 'polygon_tokens' in record:  # drivable_area
            parts = [nusc_map.extract_polygon(t)
                     for t in record['polygon_tokens']]
        else:
            parts = [nusc_map.extract_polygon(record['polygon_token'])]
            parts = [g for g in parts if g.is_valid]
        geoms.extend(g for g in parts if not g.is_empty)
    return geoms


_INDEX_CACHE = weakref.WeakKeyDictionary()


def map_geometry_index(nusc_map) -> MapGeometryIndex:
    """The (cached) :class:`MapGeometryIndex` of a ``NuScenesMap``."""
    index = _INDEX_CACHE.get(nusc_map)
    if index is None:
        index = _INDEX_CACHE[nusc_map] = MapGeometryIndex(nusc_map)
    return index


def devkit_patch(lidar2global: np.ndarray, grid: BEVGrid = MAP_GRID
                 ) -> Tuple[Tuple[float, float, float, float], float]:
    """``(patch_box, patch_angle)`` of ``get_map_mask`` for a sample.

    As BEVFusion computes them: the LiDAR yaw is ``arctan2`` of the lidar x
    axis in global, in degrees as ``yaw / pi * 180``; ``patch_box`` is
    (x, y, height, width) = the grid centre in global xy (the LiDAR position
    itself for a grid centred on it) and the grid's y and x extents.

    Args:
        lidar2global: (4, 4) keyframe LiDAR -> global.
        grid: the BEV grid in the lidar frame.
    """
    lidar2global = np.asarray(lidar2global, dtype=np.float64)
    heading = np.dot(lidar2global[:3, :3], np.array([1.0, 0.0, 0.0]))
    patch_angle = np.arctan2(heading[1], heading[0]) / np.pi * 180
    (x0, x1), (y0, y1) = grid.x_range, grid.y_range
    centre_lidar = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0])
    centre = lidar2global[:2, 3]
    if centre_lidar.any():  # (a centred grid keeps the exact position)
        centre = centre + lidar2global[:2, :2] @ centre_lidar
    return (centre[0], centre[1], y1 - y0, x1 - x0), patch_angle


def _to_patch_frame(geoms: np.ndarray, patch_box, patch_angle: float,
                    wrap_polygon: bool) -> List:
    """The devkit's ``_get_layer_polygon`` / ``_get_layer_line`` on the given
    global geometries: clip to the turned patch, rotate by -patch_angle about
    its centre, move the centre to the origin (a Polygon result becomes a
    one-part MultiPolygon, as there)."""
    patch_x, patch_y = patch_box[0], patch_box[1]
    patch = _devkit_explorer().get_patch_coord(patch_box, patch_angle)
    out = []
    for geom in shapely.intersection(geoms, patch):
        if geom.is_empty:
            continue
        if wrap_polygon and geom.geom_type not in ('Polygon', 'MultiPolygon'):
            # a touching edge or corner: the devkit fails on it later
            geom = _polygonal(geom)
            if geom.is_empty:
                continue
        geom = affinity.rotate(geom, -patch_angle, origin=(patch_x, patch_y),
                               use_radians=False)
        geom = affinity.affine_transform(
            geom, [1.0, 0.0, 0.0, 1.0, -patch_x, -patch_y])
        if wrap_polygon and geom.geom_type == 'Polygon':
            geom = MultiPolygon([geom])
        out.append(geom)
    return out


class _Canvas:
    """The devkit's ``_polygon_geom_to_mask`` / ``_line_geom_to_mask``
    steps for a (height, width) m patch on a (Y, X) canvas."""

    def __init__(self, patch_h: float, patch_w: float, shape: Tuple[int,
                                                                    int]):
        local_box = (0.0, 0.0, patch_h, patch_w)
        self.patch = _devkit_explorer().get_patch_coord(local_box)
        self.shape = tuple(shape)
        self.scale = (shape[1] / patch_w, shape[0] / patch_h)  # x, y
        self.trans = (patch_w / 2.0, patch_h / 2.0)

    def to_canvas(self, geom):
        """Clip to the local patch and scale to canvas units (None when
        nothing is left)."""
        geom = geom.intersection(self.patch)
        if geom.is_empty:
            return None
        geom = affinity.affine_transform(
            geom, [1.0, 0.0, 0.0, 1.0, self.trans[0], self.trans[1]])
        return affinity.scale(geom, xfact=self.scale[0],
                              yfact=self.scale[1], origin=(0, 0))

    def polygons(self, geoms: Sequence) -> np.ndarray:
        """(Y, X) uint8 mask of patch-frame (Multi)Polygons."""
        mask = np.zeros(self.shape, np.uint8)
        draw = _devkit_explorer().mask_for_polygons
        for geom in geoms:
            geom = self.to_canvas(geom)
            if geom is None:
                continue
            if geom.geom_type == 'Polygon':
                geom = MultiPolygon([geom])
            elif geom.geom_type != 'MultiPolygon':  # the devkit fails here
                geom = _polygonal(geom)
            mask = draw(geom, mask)
        return mask

    def lines(self, geoms: Sequence) -> np.ndarray:
        """(Y, X) uint8 mask of patch-frame lines, every part drawn alone."""
        mask = np.zeros(self.shape, np.uint8)
        draw = _devkit_explorer().mask_for_lines
        for geom in geoms:
            for part in _parts(geom):
                part = self.to_canvas(part)
                for piece in _parts(part) if part is not None else ():
                    mask = draw(piece, mask)
        return mask


def _parts(geom) -> Iterable:
    """The single-part geometries of ``geom`` (itself when single-part)."""
    if geom.is_empty:
        return
    if hasattr(geom, 'geoms'):
        for part in geom.geoms:
            yield from _parts(part)
    else:
        yield geom


def _polygonal(geom) -> MultiPolygon:
    """The polygon parts of a geometry, as a MultiPolygon."""
    return MultiPolygon([g for g in _parts(geom) if g.geom_type == 'Polygon'])


def rasterise_sample_masks(nusc_map, lidar2global: np.ndarray,
                           grid: BEVGrid = MAP_GRID) -> np.ndarray:
    """The (C, Y, X) bool map masks of one sample, equal to
    ``get_map_mask(*devkit_patch(lidar2global, grid), layers, grid.shape)``
    (divider: OR of its layers).

    Args:
        nusc_map: the devkit ``NuScenesMap`` of the sample's location.
        lidar2global: (4, 4) keyframe LiDAR -> global.
        grid: the BEV grid in the lidar frame.
    """
    index = map_geometry_index(nusc_map)
    patch_box, patch_angle = devkit_patch(lidar2global, grid)
    area = _devkit_explorer().get_patch_coord(patch_box, patch_angle)
    canvas = _Canvas(patch_box[2], patch_box[3], grid.shape)
    masks = np.zeros((len(MAP_CLASSES), *grid.shape), dtype=bool)
    for c, cls in enumerate(MAP_CLASSES):
        for layer in MAP_CLASS_LAYERS[cls]:
            is_line = layer in LINE_LAYERS
            local = _to_patch_frame(index.query(layer, area), patch_box,
                                    patch_angle, wrap_polygon=not is_line)
            if local:
                draw = canvas.lines if is_line else canvas.polygons
                masks[c] |= draw(local).astype(bool)
    return masks


def info_lidar2global(info: dict) -> np.ndarray:
    """(4, 4) lidar -> global of an info entry (ego2global @ lidar2ego)."""
    return (np.asarray(info['ego2global'], dtype=np.float64)
            @ np.asarray(info['lidar_points']['lidar2ego'], dtype=np.float64))


class NuScenesMapCache:
    """Loads each location's ``NuScenesMap`` once (one per process)."""

    def __init__(self, root: str):
        self.root = root
        self._maps = {}

    def __call__(self, location: str):
        if location not in self._maps:
            self._maps[location] = load_nusc_map(self.root, location)
        return self._maps[location]


def masks_for_info(maps: NuScenesMapCache, info: dict,
                   grid: BEVGrid = MAP_GRID) -> np.ndarray:
    """On-the-fly (C, Y, X) bool masks of an info entry."""
    return rasterise_sample_masks(maps(info['location']),
                                  info_lidar2global(info), grid)


def is_valid_cache_file(path: str, grid: BEVGrid = MAP_GRID) -> bool:
    """True when ``path`` is a readable mask file of the grid's shape."""
    try:
        masks = load_map_masks(path)
    except (FileNotFoundError, MapMaskFileError):
        return False
    return masks.shape == (len(MAP_CLASSES), *grid.shape)


def _cache_job(maps: NuScenesMapCache, grid: BEVGrid,
               job: Tuple[str, str, np.ndarray]) -> bool:
    """Write one sample's masks unless valid; True when computed."""
    path, location, lidar2global = job
    if is_valid_cache_file(path, grid):
        return False
    save_map_masks(path,
                   rasterise_sample_masks(maps(location), lidar2global, grid))
    return True


_WORKER = {}  # per-process state of pool workers: maps cache, grid


def _init_worker(root: str, grid: BEVGrid) -> None:
    _WORKER.update(maps=NuScenesMapCache(root), grid=grid)


def _worker_job(job: Tuple[str, str, np.ndarray]) -> bool:
    return _cache_job(_WORKER['maps'], _WORKER['grid'], job)


def _remove_stale_temp_files(mask_dir: str) -> None:
    """Temp files of a killed run (save_map_masks' ``.<name>.*.tmp``)."""
    for path in glob.glob(osp.join(mask_dir, '.*.npz.*.tmp')):
        os.remove(path)


def create_map_mask_cache(root: str, out_dir: str, infos: Sequence[dict],
                          workers: int = 0, grid: BEVGrid = MAP_GRID,
                          chunksize: Optional[int] = None,
                          progress: bool = True) -> Dict[str, int]:
    """Write ``out_dir/<info['map_mask_path']>`` for every info entry.

    Resumable: a sample whose file is already valid is skipped. Each file is
    written atomically, so an interrupted run leaves only complete files.

    Args:
        root: nuScenes dataroot (holds maps/expansion/*.json).
        out_dir: where the relative ``map_mask_path`` of each info points.
        infos: data_list entries (``location``, ``ego2global``,
            ``lidar_points.lidar2ego``, ``map_mask_path``).
        workers: processes; 0 or 1 computes in this process.

    Returns:
        dict(total, computed, skipped).
    """
    check_map_expansion(root, sorted({i['location'] for i in infos}))
    jobs = [(osp.join(out_dir, i['map_mask_path']), i['location'],
             info_lidar2global(i)) for i in infos]
    for directory in {osp.dirname(job[0]) for job in jobs}:
        os.makedirs(directory, exist_ok=True)
        _remove_stale_temp_files(directory)
    bar = dict(total=len(jobs), desc='map masks', disable=not progress)
    if workers <= 1:
        maps = NuScenesMapCache(root)
        done = [_cache_job(maps, grid, j) for j in tqdm(jobs, **bar)]
    else:
        chunksize = chunksize or max(1, min(32, len(jobs) // (4 * workers)))
        with mp.get_context().Pool(workers, _init_worker,
                                   (root, grid)) as pool:
            done = list(tqdm(pool.imap_unordered(_worker_job, jobs,
                                                 chunksize), **bar))
    computed = int(sum(done))
    return dict(total=len(jobs), computed=computed,
                skipped=len(jobs) - computed)
