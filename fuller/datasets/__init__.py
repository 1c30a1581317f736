"""Datasets, map-mask cache I/O and data transforms of fuller."""
from .map_mask_io import (MAP_CLASSES, MapMaskFileError, load_map_masks,
                          read_map_mask_class_names, save_map_masks)
from .nuscenes_multitask_dataset import (InfoSchemaError,
                                         NuScenesMultiTaskDataset)
from .transforms import *  # noqa: F401,F403

__all__ = [
    'NuScenesMultiTaskDataset', 'InfoSchemaError', 'MAP_CLASSES',
    'save_map_masks', 'load_map_masks', 'read_map_mask_class_names',
    'MapMaskFileError'
]
