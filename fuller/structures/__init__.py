from .frames import (BEVGrid, apply_transform, compose, invert_transform,
                     make_transform)
from .geometry import BEVGeometry, as_bev_grid
from .nuscenes_world import CAMERAS, DETECTION_CLASSES, MAP_CLASSES, MAP_GRID

__all__ = [
    'BEVGrid', 'make_transform', 'invert_transform', 'compose',
    'apply_transform', 'DETECTION_CLASSES', 'MAP_CLASSES', 'CAMERAS',
    'MAP_GRID', 'BEVGeometry', 'as_bev_grid'
]
