"""Camera-to-BEV view transforms (Lift-Splat) and their pure-torch pooling."""
from .bev_pool import bev_pool, flat_cell_index
from .lss_view_transform import (BaseLSSViewTransform, DepthLSSViewTransform,
                                 LSSViewTransform)

__all__ = [
    'bev_pool', 'flat_cell_index', 'BaseLSSViewTransform', 'LSSViewTransform',
    'DepthLSSViewTransform'
]
