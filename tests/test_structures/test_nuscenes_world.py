"""The nuScenes constants against sources that do not come from fuller: the
devkit (detection config, map layers), mmdet3d (class order of its
NuScenesDataset) and a real mmdet3d v2 info file (class and camera order)."""
import json
import pickle

import numpy as np
import pytest

from fuller.structures import (CAMERAS, DETECTION_CLASSES, MAP_CLASSES,
                               MAP_GRID, BEVGrid)

DEVKIT_MAP_LAYERS = ('polygon', 'line', 'node', 'drivable_area',
                     'road_segment', 'road_block', 'lane', 'ped_crossing',
                     'walkway', 'stop_line', 'carpark_area', 'road_divider',
                     'lane_divider', 'traffic_light', 'lane_connector')


@pytest.fixture(scope='module')
def empty_map(tmp_path_factory):
    """A devkit ``NuScenesMap`` of an empty map-expansion json (v1.3)."""
    from nuscenes.map_expansion.map_api import NuScenesMap
    root = tmp_path_factory.mktemp('empty_map')
    (root / 'maps' / 'expansion').mkdir(parents=True)
    obj = {layer: [] for layer in DEVKIT_MAP_LAYERS}
    obj.update(version='1.3', canvas_edge=[300.0, 300.0], arcline_path_3={},
               connectivity={})
    (root / 'maps' / 'expansion' / 'boston-seaport.json').write_text(
        json.dumps(obj))
    return NuScenesMap(str(root), 'boston-seaport')


def real_infos(root):
    with open(root / 'infos' / 'sample_a_infos_v2.pkl', 'rb') as f:
        return pickle.load(f)


def test_detection_classes_are_the_devkits_in_mmdet3d_order():
    from mmdet3d.datasets import NuScenesDataset
    from nuscenes.eval.detection.config import config_factory
    devkit = config_factory('detection_cvpr_2019').class_names
    assert isinstance(DETECTION_CLASSES, tuple)
    assert len(DETECTION_CLASSES) == len(set(DETECTION_CLASSES)) == 10
    assert set(DETECTION_CLASSES) == set(devkit)
    assert DETECTION_CLASSES == tuple(NuScenesDataset.METAINFO['classes'])


def test_orders_match_a_real_mmdet3d_info_file(real_nuscenes_root):
    infos = real_infos(real_nuscenes_root)
    labels = infos['metainfo']['categories']
    assert DETECTION_CLASSES == tuple(sorted(labels, key=labels.get))
    assert CAMERAS == tuple(infos['data_list'][0]['images'])


def test_cameras_are_the_real_camera_sensors(real_nuscenes_root):
    sensors = json.loads(
        (real_nuscenes_root / 'tables-sample-a' / 'sensor.json').read_text())
    cams = {s['channel'] for s in sensors if s['modality'] == 'camera'}
    assert len(CAMERAS) == 6 and set(CAMERAS) == cams


def test_map_classes_are_devkit_layers(empty_map):
    from fuller.data_prep.bev_map_masks import MAP_CLASS_LAYERS
    from fuller.datasets.map_mask_io import MAP_CLASSES as reexported
    assert reexported is MAP_CLASSES
    assert MAP_CLASSES == ('drivable_area', 'ped_crossing', 'walkway',
                           'stop_line', 'carpark_area', 'divider')
    polygons = set(empty_map.non_geometric_polygon_layers)
    assert set(MAP_CLASSES[:-1]) <= polygons
    assert {'road_divider', 'lane_divider'} <= set(
        empty_map.non_geometric_line_layers)
    # the rasteriser draws each class from devkit layers, in this order
    assert tuple(MAP_CLASS_LAYERS) == MAP_CLASSES
    assert MAP_CLASS_LAYERS['divider'] == ('road_divider', 'lane_divider')
    for cls in MAP_CLASSES[:-1]:
        assert MAP_CLASS_LAYERS[cls] == (cls, )


def test_map_grid_gives_200_by_200_masks(empty_map):
    from fuller.data_prep.bev_map_masks import rasterise_sample_masks
    from fuller.datasets.transforms.loading import LoadBEVMapMasks
    assert MAP_GRID == BEVGrid((-50, 50), (-50, 50), (0.5, 0.5))
    assert MAP_GRID.shape == (200, 200)
    ys, xs = MAP_GRID.cell_centers()
    assert (xs[0], xs[-1], ys[0], ys[-1]) == (-49.75, 49.75, -49.75, 49.75)
    lidar2global = np.eye(4)
    lidar2global[:2, 3] = (150.0, 150.0)   # grid inside the 300 m canvas
    masks = rasterise_sample_masks(empty_map, lidar2global)
    assert masks.shape == (len(MAP_CLASSES), 200, 200) and not masks.any()
    assert LoadBEVMapMasks().grid == MAP_GRID
