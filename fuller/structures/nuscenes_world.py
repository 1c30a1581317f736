"""Constants of the nuScenes world, each written once: class lists, camera
names and the map-segmentation grid.

The ground floor of fuller: it imports nothing from fuller except
``fuller.structures.frames``, so datasets, heads, metrics, data preparation
and tools can all import it.

- ``DETECTION_CLASSES``: the 10 detection classes; label ``i`` is
  ``DETECTION_CLASSES[i]``. The order of mmdet3d's ``NuScenesDataset`` and of
  fuller's configs (the devkit lists the same names in another order).
- ``MAP_CLASSES``: the 6 BEVFusion map classes; channel ``c`` of a
  (C, Y, X) map mask is ``MAP_CLASSES[c]``. Each is the devkit map layer of
  the same name, except ``divider`` = road_divider OR lane_divider.
- ``CAMERAS``: the 6 cameras; the order of info files, of the N axis of
  image tensors and of the per-camera matrices.
- ``MAP_GRID``: BEVFusion's published map grid in the keyframe ``lidar``
  frame: x and y in [-50, 50) m, 0.5 m cells, so masks are (Y, X) =
  (200, 200).
"""
from .frames import BEVGrid

DETECTION_CLASSES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle',
                     'bicycle', 'motorcycle', 'pedestrian', 'traffic_cone',
                     'barrier')
MAP_CLASSES = ('drivable_area', 'ped_crossing', 'walkway', 'stop_line',
               'carpark_area', 'divider')
CAMERAS = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK',
           'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')
MAP_GRID = BEVGrid(x_range=(-50.0, 50.0), y_range=(-50.0, 50.0),
                   cell_size=0.5)

__all__ = ['DETECTION_CLASSES', 'MAP_CLASSES', 'CAMERAS', 'MAP_GRID']
