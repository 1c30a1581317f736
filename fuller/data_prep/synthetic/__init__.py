"""The synthetic nuScenes-format dataset generator
(tools/create_synthetic_nuscenes.py).

Modules, from the top: ``nuscenes`` (the generator: layout of every scene,
then the dataroot), ``simulate`` (sensors through one scene -> records),
``scene`` (roads, map geometry), ``traffic`` (objects and their tracks),
``sensors`` (real calibrations, LiDAR ray casting), ``render`` (camera
images), ``records`` (tokens, static tables, map-expansion json).
"""
from .nuscenes import KEYFRAME_US, generate_synthetic_nuscenes, scene_layout

__all__ = ['generate_synthetic_nuscenes', 'scene_layout', 'KEYFRAME_US']
