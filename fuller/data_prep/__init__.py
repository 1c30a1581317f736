"""Dataset preparation: the synthetic nuScenes generator and split helpers."""
from .splits import eval_set_name, get_split_scenes, split_of_scenes
from .synthetic_nuscenes import generate_synthetic_nuscenes

__all__ = ['generate_synthetic_nuscenes', 'get_split_scenes',
           'eval_set_name', 'split_of_scenes']
