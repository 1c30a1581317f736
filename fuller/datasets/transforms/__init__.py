"""Data transforms of fuller (registered in mmdet3d's TRANSFORMS)."""
from .bev_aug import BEVGlobalRotScaleTrans, BEVRandomFlip3D, warp_bev_masks
from .formatting import PackMultiTaskInputs
from .image_aug import ImageAug3D
from .loading import (LoadBEVMapMasks, LoadMultiViewImages, LoadNuScenesPoints,
                      load_image, load_points)

__all__ = [
    'LoadNuScenesPoints', 'LoadMultiViewImages', 'LoadBEVMapMasks',
    'load_points', 'load_image', 'ImageAug3D', 'BEVGlobalRotScaleTrans',
    'BEVRandomFlip3D', 'warp_bev_masks', 'PackMultiTaskInputs'
]
