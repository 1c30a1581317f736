"""Dataset preparation: the synthetic nuScenes generator, split helpers, info
files and the BEV map-mask cache (tools/create_synthetic_nuscenes.py,
tools/create_data.py)."""
from .bev_map_masks import (MAP_GRID, check_map_expansion,
                            create_map_mask_cache, rasterise_sample_masks)
from .nuscenes_infos import create_nuscenes_data
from .splits import eval_set_name, get_split_scenes, split_of_scenes
from .synthetic import generate_synthetic_nuscenes

__all__ = [
    'generate_synthetic_nuscenes', 'get_split_scenes', 'eval_set_name',
    'split_of_scenes', 'create_nuscenes_data', 'create_map_mask_cache',
    'rasterise_sample_masks', 'check_map_expansion', 'MAP_GRID'
]
