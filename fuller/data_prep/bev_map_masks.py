"""BEV map masks per sample, rasterised from the nuScenes map expansion.

Shape shorthand: C map classes (``MAP_CLASSES``), Y rows (y cells), X columns
(x cells), P points of a polygon ring or line.

Frames: ``global`` (map frame, x east, y north) and ``lidar`` (LIDAR_TOP of
the keyframe, x forward, y left). The map is cut in the plane: the grid is
centred on the LiDAR and turned by the LiDAR yaw (heading of its x axis in
the global xy plane), as ``NuScenesMap.get_map_mask`` does with
``patch_angle``. Masks are laid out as ``fuller.structures.BEVGrid``:
``mask[c, iy, ix]`` covers y in ``[y_min + iy*dy, ...)`` and x in
``[x_min + ix*dx, ...)``; a cell is set when its centre is inside a polygon
(dividers: inside the line buffered to ``DIVIDER_WIDTH_M``), computed exactly
by a scanline fill (OpenCV's fill, used by the devkit, also sets cells that a
boundary only grazes and the devkit shifts by half a cell).

Geometry comes from the devkit map API (``extract_polygon`` /
``extract_line`` of each layer record), indexed once per map with an STRtree;
rasterisation is ours. Lines go through :func:`rasterise_lines`, which walks
``.geoms`` of multi-part geometries: devkit 1.2.0's
``NuScenesMapExplorer.mask_for_lines`` iterates a MultiLineString directly,
which shapely 2 forbids, so ``get_map_mask`` crashes (TypeError) on dividers
that its patch cuts into pieces. The installed devkit is not patched.
"""
import glob
import multiprocessing as mp
import os
import os.path as osp
import weakref
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import shapely
from shapely import STRtree
from shapely.geometry import Polygon, box
from tqdm import tqdm

from fuller.datasets.map_mask_io import (MAP_CLASSES, MapMaskFileError,
                                         load_map_masks, save_map_masks)
from fuller.structures.frames import BEVGrid

MAP_GRID = BEVGrid((-50.0, 50.0), (-50.0, 50.0), 0.5)
# map class -> devkit layers whose union it is.
MAP_CLASS_LAYERS = {
    'drivable_area': ('drivable_area', ),
    'ped_crossing': ('ped_crossing', ),
    'walkway': ('walkway', ),
    'stop_line': ('stop_line', ),
    'carpark_area': ('carpark_area', ),
    'divider': ('road_divider', 'lane_divider'),
}
LINE_CLASSES = ('divider', )
# Divider band width: the devkit's 2-pixel lines on BEVFusion's 0.5 m grid.
DIVIDER_WIDTH_M = 1.0
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


class MapGeometryIndex:
    """The geometries of each map class of one map, global frame, indexed.

    Args:
        nusc_map: a devkit ``NuScenesMap``.
    """

    def __init__(self, nusc_map):
        self.geoms: Dict[str, np.ndarray] = {}
        self.trees: Dict[str, STRtree] = {}
        for cls, layers in MAP_CLASS_LAYERS.items():
            geoms = []
            for layer in layers:
                geoms.extend(_layer_geometries(nusc_map, layer))
            self.geoms[cls] = np.array(geoms, dtype=object)
            self.trees[cls] = STRtree(geoms)

    def query(self, cls: str, area) -> np.ndarray:
        """Geometries of ``cls`` whose bounding box meets ``area``'s."""
        return self.geoms[cls][self.trees[cls].query(area)]


def _layer_geometries(nusc_map, layer: str) -> List:
    """Shapely geometries of every record of a devkit layer, global frame.

    Keeps the devkit's choices (``_get_layer_polygon`` / ``_get_layer_line``):
    empty geometries are dropped, and so are invalid polygons outside
    ``drivable_area``, so the masks match what ``get_map_mask`` (and the
    BEVFusion labels built with it) contain.
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


def planar_global2lidar(lidar2global: np.ndarray) -> np.ndarray:
    """(3, 3) homogeneous 2D global -> lidar: translation and yaw only."""
    lidar2global = np.asarray(lidar2global, dtype=np.float64)
    yaw = np.arctan2(lidar2global[1, 0], lidar2global[0, 0])
    c, s = np.cos(yaw), np.sin(yaw)
    lidar2global_2d = np.array([[c, -s, lidar2global[0, 3]],
                                [s, c, lidar2global[1, 3]], [0.0, 0.0, 1.0]])
    return np.linalg.inv(lidar2global_2d)


def _cell_coords(xy: np.ndarray, grid: BEVGrid,
                 xy2lidar: Optional[np.ndarray]) -> np.ndarray:
    """(P, 2) metric xy -> (P, 2) continuous (col, row) cell coordinates.

    The centre of cell (iy, ix), ``(x_min + (ix + 0.5) * dx, ...)``, lands on
    the integers ``(ix, iy)``.
    """
    xy = np.asarray(xy, dtype=np.float64)[:, :2]
    if xy2lidar is not None:
        xy = xy @ xy2lidar[:2, :2].T + xy2lidar[:2, 2]
    col = (xy[:, 0] - grid.x_range[0]) / grid.cell_size[0] - 0.5
    row = (xy[:, 1] - grid.y_range[0]) / grid.cell_size[1] - 0.5
    return np.stack([col, row], axis=1)


def fill_rings(mask: np.ndarray, rings: Sequence[np.ndarray]) -> np.ndarray:
    """Set the cells of a (Y, X) bool ``mask`` whose centre is inside.

    Scanline with the even-odd rule over all ``rings`` together (exterior
    plus holes of one polygon), so a hole clears only its own polygon; the
    result is OR-ed into ``mask``. Edges are half-open (a centre exactly on
    a left/bottom edge is inside, on a right/top edge outside).

    Args:
        mask: (Y, X) bool, modified in place.
        rings: (P, 2) arrays of (col, row) cell coordinates.
    """
    ny, nx = mask.shape
    rings = [r if np.array_equal(r[0], r[-1]) else np.vstack([r, r[:1]])
             for r in rings if len(r) >= 3]
    if not rings:
        return mask
    start = np.concatenate([r[:-1] for r in rings])
    end = np.concatenate([r[1:] for r in rings])
    lo = max(0, int(np.ceil(min(start[:, 1].min(), end[:, 1].min()))))
    hi = min(ny - 1, int(np.floor(max(start[:, 1].max(), end[:, 1].max()))))
    if lo > hi:
        return mask
    # an edge crosses row r iff min(y) <= r < max(y): drop the others early
    near = ((np.maximum(start[:, 1], end[:, 1]) > lo)
            & (np.minimum(start[:, 1], end[:, 1]) <= hi))
    start, end = start[near], end[near]
    rows = np.arange(lo, hi + 1, dtype=np.float64)
    crosses = (start[:, 1, None] <= rows) != (end[:, 1, None] <= rows)
    edge, row = np.nonzero(crosses)  # (E, R) -> crossing pairs
    t = (rows[row] - start[edge, 1]) / (end[edge, 1] - start[edge, 1])
    x_cross = start[edge, 0] + t * (end[edge, 0] - start[edge, 0])
    first_col = np.clip(np.ceil(x_cross), 0, nx).astype(np.int64)
    toggles = np.bincount(row * (nx + 1) + first_col,
                          minlength=len(rows) * (nx + 1))
    parity = np.cumsum(toggles.reshape(len(rows), nx + 1)[:, :nx], axis=1)
    mask[lo:hi + 1] |= (parity & 1).astype(bool)
    return mask


def _polygon_rings(geom) -> Iterable[List[np.ndarray]]:
    """[exterior, *holes] coordinate arrays of each polygon part."""
    if geom.is_empty:
        return
    if geom.geom_type == 'Polygon':
        yield [np.asarray(geom.exterior.coords)] + [
            np.asarray(ring.coords) for ring in geom.interiors]
    elif geom.geom_type in ('MultiPolygon', 'GeometryCollection'):
        for part in geom.geoms:
            yield from _polygon_rings(part)


def _line_parts(geom) -> Iterable:
    """Each LineString of a geometry (MultiLineString parts via .geoms)."""
    if geom.is_empty:
        return
    if geom.geom_type in ('LineString', 'LinearRing'):
        yield geom
    elif geom.geom_type in ('MultiLineString', 'GeometryCollection'):
        for part in geom.geoms:
            yield from _line_parts(part)


def rasterise_polygons(polygons: Sequence, grid: BEVGrid, mask: np.ndarray,
                       xy2lidar: Optional[np.ndarray] = None) -> np.ndarray:
    """OR (Multi)Polygons into a (Y, X) bool ``mask``, in place.

    Args:
        polygons: shapely geometries in the lidar frame, or in a frame that
            the (3, 3) homogeneous 2D transform ``xy2lidar`` maps to it.
    """
    for geom in polygons:
        for rings in _polygon_rings(geom):
            fill_rings(mask, [_cell_coords(r, grid, xy2lidar) for r in rings])
    return mask


def rasterise_lines(lines: Sequence, grid: BEVGrid, mask: np.ndarray,
                    xy2lidar: Optional[np.ndarray] = None,
                    width_m: float = DIVIDER_WIDTH_M) -> np.ndarray:
    """OR (Multi)LineStrings, drawn ``width_m`` wide, into ``mask``.

    Each line is moved to the lidar frame and clipped to the grid (plus the
    line width), which may split it into a MultiLineString; every part is
    walked through ``.geoms`` and buffered into a polygon.
    """
    (x0, x1), (y0, y1) = grid.x_range, grid.y_range
    margin = width_m
    area = box(x0 - margin, y0 - margin, x1 + margin, y1 + margin)
    for geom in lines:
        if xy2lidar is not None:
            geom = shapely.transform(
                geom, lambda xy: xy @ xy2lidar[:2, :2].T + xy2lidar[:2, 2])
        for part in _line_parts(geom.intersection(area)):
            rasterise_polygons([part.buffer(width_m / 2.0)], grid, mask)
    return mask


def _grid_area_global(grid: BEVGrid, lidar2global_2d: np.ndarray) -> Polygon:
    (x0, x1), (y0, y1) = grid.x_range, grid.y_range
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    rot, trans = lidar2global_2d[:2, :2], lidar2global_2d[:2, 2]
    return Polygon(corners @ rot.T + trans)


def rasterise_sample_masks(nusc_map, lidar2global: np.ndarray,
                           grid: BEVGrid = MAP_GRID) -> np.ndarray:
    """The (C, Y, X) bool map masks of one sample.

    Args:
        nusc_map: the devkit ``NuScenesMap`` of the sample's location.
        lidar2global: (4, 4) keyframe LiDAR -> global.
        grid: the BEV grid in the lidar frame.
    """
    index = map_geometry_index(nusc_map)
    global2lidar = planar_global2lidar(lidar2global)
    area = _grid_area_global(grid, np.linalg.inv(global2lidar))
    masks = np.zeros((len(MAP_CLASSES), *grid.shape), dtype=bool)
    for c, cls in enumerate(MAP_CLASSES):
        geoms = index.query(cls, area)
        if cls in LINE_CLASSES:
            rasterise_lines(geoms, grid, masks[c], global2lidar)
        else:
            rasterise_polygons(geoms, grid, masks[c], global2lidar)
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
