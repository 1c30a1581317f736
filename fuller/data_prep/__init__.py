"""Dataset preparation: the synthetic nuScenes generator, split helpers, info
files and the BEV map-mask cache (tools/create_synthetic_nuscenes.py,
tools/create_data.py).

The names below load their module on first use, so a tool that needs one
step (e.g. the map-mask cache) imports only that step's dependencies.
"""
import importlib

_EXPORTS = {
    'generate_synthetic_nuscenes': '.synthetic',
    'get_split_scenes': '.splits', 'eval_set_name': '.splits',
    'split_of_scenes': '.splits',
    'create_nuscenes_data': '.nuscenes_infos',
    'create_map_mask_cache': '.bev_map_masks',
    'rasterise_sample_masks': '.bev_map_masks',
    'check_map_expansion': '.bev_map_masks', 'MAP_GRID': '.bev_map_masks',
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = list(_EXPORTS)
