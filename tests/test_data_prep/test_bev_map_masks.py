"""BEV map masks: known geometry lands in the expected cells, the shapely-2
divider fix, devkit agreement, and the resumable cache.

Hand-made maps are written as minimal map-expansion json files; the LiDAR
pose is turned and moved so that a frame mix-up cannot pass.
"""
import glob
import json
import os
import os.path as osp
import pickle
import shutil

import numpy as np
import pytest
from shapely.geometry import LineString, box

from fuller.data_prep import bev_map_masks as bmm
from fuller.datasets.map_mask_io import MAP_CLASSES, load_map_masks
from fuller.structures.frames import BEVGrid, make_transform

LOCATION = 'singapore-onenorth'
MAP_LAYERS = ('polygon', 'line', 'node', 'drivable_area', 'road_segment',
              'road_block', 'lane', 'ped_crossing', 'walkway', 'stop_line',
              'carpark_area', 'road_divider', 'lane_divider', 'traffic_light',
              'lane_connector')
# a non-square grid: 0.25 m cells, x in [-20, 30), y in [-10, 10) -> (80, 200)
GRID = BEVGrid((-20.0, 30.0), (-10.0, 10.0), 0.25)
YAW = np.deg2rad(30.0)
ORIGIN = np.array([500.0, 600.0])


def write_map_json(root, polygons=(), lines=(), location=LOCATION):
    """Minimal map-expansion json. polygons: (layer, exterior, holes) in
    global xy; lines: (layer, points)."""
    obj = {k: [] for k in MAP_LAYERS}
    obj.update(version='1.3', canvas_edge=[3000.0, 3000.0],
               arcline_path_3={}, connectivity={})

    def node(xy):
        token = f'node{len(obj["node"])}'
        obj['node'].append(dict(token=token, x=float(xy[0]), y=float(xy[1])))
        return token

    for i, (layer, exterior, holes) in enumerate(polygons):
        obj['polygon'].append(dict(
            token=f'poly{i}', exterior_node_tokens=[node(p) for p in exterior],
            holes=[dict(node_tokens=[node(p) for p in h]) for h in holes]))
        record = dict(token=f'{layer}{i}')
        if layer == 'drivable_area':
            record['polygon_tokens'] = [f'poly{i}']
        else:
            record['polygon_token'] = f'poly{i}'
        obj[layer].append(record)
    for i, (layer, points) in enumerate(lines):
        obj['line'].append(dict(token=f'line{i}',
                                node_tokens=[node(p) for p in points]))
        obj[layer].append(dict(token=f'{layer}{i}', line_token=f'line{i}'))
    os.makedirs(osp.join(root, 'maps', 'expansion'), exist_ok=True)
    with open(bmm.map_expansion_path(root, location), 'w') as f:
        json.dump(obj, f)


def lidar2global():
    c, s = np.cos(YAW), np.sin(YAW)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return make_transform(rot, [ORIGIN[0], ORIGIN[1], 1.8])


def to_global(points_lidar):
    """Lidar-frame xy (the pose above) -> global xy."""
    mat = lidar2global()
    return [tuple(mat[:2, :2] @ np.asarray(p, float) + ORIGIN)
            for p in points_lidar]


def rect(x0, x1, y0, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def expected_cells(x0, x1, y0, y1, grid=GRID):
    """Cells whose centre lies in [x0, x1) x [y0, y1), by hand."""
    ys, xs = grid.cell_centers()
    return ((ys[:, None] >= y0) & (ys[:, None] < y1)
            & (xs[None] >= x0) & (xs[None] < x1))


@pytest.fixture(scope='module')
def hand_map(tmp_path_factory):
    """A ped crossing and a lane strip straight ahead of the LiDAR, a
    drivable area with a hole, a walkway overlapping that hole, and a divider
    that leaves and re-enters the grid."""
    root = str(tmp_path_factory.mktemp('hand_map'))
    zigzag = [(-30, 5), (35, 5), (35, 7), (-5, 7), (-5, 40)]
    write_map_json(root, polygons=[
        ('ped_crossing', to_global(rect(10, 20, -2, 2)), []),
        ('carpark_area', to_global(rect(5, 25, -1, 1)), []),
        ('drivable_area', to_global(rect(-15, 15, -8, 8)),
         [to_global(rect(-5, 5, -3, 3))]),
        ('walkway', to_global(rect(-2, 2, -1, 1)), []),
    ], lines=[('road_divider', to_global(zigzag))])
    return root


def test_known_polygons_land_in_expected_cells(hand_map):
    masks = bmm.rasterise_sample_masks(bmm.load_nusc_map(hand_map, LOCATION),
                                       lidar2global(), GRID)
    assert masks.shape == (len(MAP_CLASSES), 80, 200) and masks.dtype == bool
    ped = MAP_CLASSES.index('ped_crossing')
    np.testing.assert_array_equal(masks[ped], expected_cells(10, 20, -2, 2))
    # x in [10, 20) -> columns 120..159, y in [-2, 2) -> rows 32..47
    rows, cols = np.nonzero(masks[ped])
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (32, 47, 120,
                                                                159)
    # the strip straight ahead lies only in columns of x > 0
    lane = masks[MAP_CLASSES.index('carpark_area')]
    np.testing.assert_array_equal(lane, expected_cells(5, 25, -1, 1))
    xs = GRID.cell_centers()[1]
    assert lane.any() and (xs[np.nonzero(lane)[1]] > 0).all()
    # the hole is cut from the drivable area only, not from the walkway
    drivable = expected_cells(-15, 15, -8, 8) & ~expected_cells(-5, 5, -3, 3)
    np.testing.assert_array_equal(masks[MAP_CLASSES.index('drivable_area')],
                                  drivable)
    np.testing.assert_array_equal(masks[MAP_CLASSES.index('walkway')],
                                  expected_cells(-2, 2, -1, 1))
    assert not masks[MAP_CLASSES.index('stop_line')].any()


def test_divider_clipped_into_pieces_rasterises(hand_map):
    """A divider that the grid cuts into a MultiLineString: ours draws every
    piece; the devkit's own line rasteriser crashes on the same input."""
    nusc_map = bmm.load_nusc_map(hand_map, LOCATION)
    masks = bmm.rasterise_sample_masks(nusc_map, lidar2global(), GRID)
    divider = masks[MAP_CLASSES.index('divider')]
    ys, xs = GRID.cell_centers()
    # pieces: y=5 for x in [-20, 30); x=-5 for y in [7, 10) (1 m wide band)
    assert divider[np.abs(ys - 5.0) < 0.5][:, xs < 30].all()
    assert divider[:, np.abs(xs + 5.0) < 0.5][ys > 7.5].all()
    band = ((np.abs(ys[:, None] - 5) <= 0.5) | (np.abs(ys[:, None] - 7) <= 0.5)
            | ((np.abs(xs[None] + 5) <= 0.5) & (ys[:, None] >= 6.5)))
    assert not (divider & ~band).any()

    line = LineString([(-30, 5), (35, 5), (35, 7), (-5, 7), (-5, 40)])
    pieces = line.intersection(box(-20, -10, 30, 10))
    assert pieces.geom_type == 'MultiLineString'
    ours = bmm.rasterise_lines([pieces], GRID, np.zeros(GRID.shape, bool))
    np.testing.assert_array_equal(ours, divider)
    from nuscenes.map_expansion.map_api import NuScenesMapExplorer
    with pytest.raises(TypeError):
        NuScenesMapExplorer.mask_for_lines(pieces, np.zeros((80, 200),
                                                            np.uint8))
    # ... so the devkit's get_map_mask fails on the same patch of the map:
    # GRID's centre (5, 0) in global xy, height (y) 20 m, width (x) 50 m.
    centre = to_global([(5.0, 0.0)])[0]
    with pytest.raises(TypeError):
        nusc_map.get_map_mask((*centre, 20.0, 50.0), np.rad2deg(YAW),
                              ['road_divider'], GRID.shape)


def test_rasterise_sample_masks_matches_devkit_polygons(hand_map):
    """Independent orientation check: the devkit's get_map_mask (rows = y,
    columns = x of the turned patch) agrees on polygon layers, up to its
    half-cell shift and boundary inflation."""
    nusc_map = bmm.load_nusc_map(hand_map, LOCATION)
    grid = BEVGrid((-25.0, 25.0), (-10.0, 10.0), 0.25)  # centred on the LiDAR
    ours = bmm.rasterise_sample_masks(nusc_map, lidar2global(), grid)
    layers = ['drivable_area', 'ped_crossing', 'walkway', 'carpark_area']
    theirs = nusc_map.get_map_mask((*ORIGIN, 20.0, 50.0), np.rad2deg(YAW),
                                   layers, grid.shape).astype(bool)
    for layer, devkit_mask in zip(layers, theirs):
        mask = ours[MAP_CLASSES.index(layer)]
        iou = (mask & devkit_mask).sum() / (mask | devkit_mask).sum()
        assert iou > 0.8, (layer, iou)
        if layer != 'drivable_area':  # (the devkit dilates holes too)
            assert not (mask & ~devkit_mask).any()  # its fill is dilated


def test_missing_map_file_names_path_and_download(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        bmm.check_map_expansion(str(tmp_path), ['boston-seaport'])
    msg = str(err.value)
    assert osp.join(str(tmp_path), 'maps', 'expansion',
                    'boston-seaport.json') in msg
    assert 'nuScenes-map-expansion-v1.3' in msg


# ---------------------------------------------------------------- the cache
@pytest.fixture(scope='module')
def generated(tmp_path_factory):
    """A generated dataroot (2 scenes, 2 maps) with infos + mask cache."""
    from fuller.data_prep.nuscenes_infos import create_nuscenes_data
    from fuller.data_prep.synthetic_nuscenes import \
        generate_synthetic_nuscenes
    base = tmp_path_factory.mktemp('nus_masks')
    root, out = str(base / 'nuscenes'), str(base / 'out')
    generate_synthetic_nuscenes(root, num_scenes=2, keyframes_per_scene=3,
                                image_size=(160, 90), seed=1,
                                lidar_azimuths=128)
    paths = create_nuscenes_data(root, out, 'v1.0-mini', max_sweeps=1,
                                 progress=False)
    infos = []
    for path in paths.values():
        with open(path, 'rb') as f:
            infos.extend(pickle.load(f)['data_list'])
    return dict(root=root, out=out, infos=infos)


def mask_files(out):
    return sorted(glob.glob(osp.join(out, 'map_masks', '*')) +
                  glob.glob(osp.join(out, 'map_masks', '.*')))


def test_cache_equals_on_the_fly(generated):
    maps = bmm.NuScenesMapCache(generated['root'])
    assert len({i['location'] for i in generated['infos']}) == 2
    non_empty = set()
    for info in generated['infos']:
        cached = load_map_masks(osp.join(generated['out'],
                                         info['map_mask_path']))
        np.testing.assert_array_equal(cached,
                                      bmm.masks_for_info(maps, info))
        non_empty.update(np.flatnonzero(cached.any(axis=(1, 2))))
    assert non_empty == set(range(len(MAP_CLASSES)))  # every class occurs


def test_generated_masks_agree_with_devkit_polygons(generated):
    """On a generated map the devkit's get_map_mask (polygon layers; its
    line path crashes under shapely 2) matches up to its half-cell shift."""
    maps = bmm.NuScenesMapCache(generated['root'])
    layers = ['drivable_area', 'walkway', 'carpark_area']
    for info in generated['infos'][::2]:
        lidar2global = bmm.info_lidar2global(info)
        yaw = np.arctan2(lidar2global[1, 0], lidar2global[0, 0])
        theirs = maps(info['location']).get_map_mask(
            (*lidar2global[:2, 3], 100.0, 100.0), np.rad2deg(yaw), layers,
            (200, 200)).astype(bool)
        ours = load_map_masks(osp.join(generated['out'],
                                       info['map_mask_path']))
        for layer, devkit_mask in zip(layers, theirs):
            mask = ours[MAP_CLASSES.index(layer)]
            if devkit_mask.sum() < 200:
                continue
            iou = (mask & devkit_mask).sum() / (mask | devkit_mask).sum()
            assert iou > 0.8, (layer, iou)
            # they differ only along boundaries (no flip, swap or offset):
            # the devkit rounds vertices to whole pixels (+-0.5), fills
            # boundary pixels (+0.5) and is shifted by half a cell
            assert not (mask & ~dilate(devkit_mask)).any(), layer
            assert not (devkit_mask & ~dilate(dilate(mask))).any(), layer


def dilate(mask):
    """3x3 binary dilation."""
    padded = np.pad(mask, 1)
    out = np.zeros_like(mask)
    for dy in range(3):
        for dx in range(3):
            out |= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]]
    return out


def test_cache_is_resumable_and_leaves_no_partial_files(generated,
                                                        tmp_path,
                                                        monkeypatch):
    root, infos = generated['root'], generated['infos']
    out = str(tmp_path / 'out')
    real = bmm.rasterise_sample_masks
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt('simulated interruption')
        return real(*args, **kwargs)

    monkeypatch.setattr(bmm, 'rasterise_sample_masks', failing)
    with pytest.raises(KeyboardInterrupt):
        bmm.create_map_mask_cache(root, out, infos, progress=False)
    files = mask_files(out)
    assert len(files) == 2 and all(f.endswith('.npz') for f in files)
    assert all(bmm.is_valid_cache_file(f) for f in files)
    monkeypatch.setattr(bmm, 'rasterise_sample_masks', real)

    stats = bmm.create_map_mask_cache(root, out, infos, progress=False)
    assert stats == dict(total=len(infos), computed=len(infos) - 2,
                         skipped=2)
    stats = bmm.create_map_mask_cache(root, out, infos, progress=False)
    assert stats['computed'] == 0 and stats['skipped'] == len(infos)

    victim = osp.join(out, infos[1]['map_mask_path'])
    mtimes = {f: os.stat(f).st_mtime_ns for f in mask_files(out)}
    os.remove(victim)
    # the temp file a run killed mid-write (SIGKILL) would leave behind
    stale = osp.join(out, 'map_masks', f'.{osp.basename(victim)}.x1y2.tmp')
    with open(stale, 'wb') as f:
        f.write(b'partial')
    stats = bmm.create_map_mask_cache(root, out, infos, progress=False)
    assert stats['computed'] == 1 and not osp.exists(stale)
    for path, mtime in mtimes.items():
        if path != victim:
            assert os.stat(path).st_mtime_ns == mtime
    with open(victim, 'wb') as f:  # a corrupt file is recomputed too
        f.write(b'not an npz')
    assert bmm.create_map_mask_cache(root, out, infos,
                                     progress=False)['computed'] == 1
    np.testing.assert_array_equal(
        load_map_masks(victim),
        load_map_masks(osp.join(generated['out'], infos[1]['map_mask_path'])))


def test_worker_pool_writes_the_same_masks(generated, tmp_path):
    out = str(tmp_path / 'pool')
    stats = bmm.create_map_mask_cache(generated['root'], out,
                                      generated['infos'], workers=2,
                                      chunksize=2, progress=False)
    assert stats['computed'] == len(generated['infos'])
    for info in generated['infos']:
        np.testing.assert_array_equal(
            load_map_masks(osp.join(out, info['map_mask_path'])),
            load_map_masks(osp.join(generated['out'],
                                    info['map_mask_path'])))


def test_missing_location_map_fails_before_writing(generated, tmp_path):
    root = str(tmp_path / 'root')
    shutil.copytree(osp.join(generated['root'], 'maps'),
                    osp.join(root, 'maps'))
    location = generated['infos'][0]['location']
    os.remove(bmm.map_expansion_path(root, location))
    out = str(tmp_path / 'out')
    with pytest.raises(FileNotFoundError, match=location):
        bmm.create_map_mask_cache(root, out, generated['infos'],
                                  progress=False)
    assert not osp.exists(out)
