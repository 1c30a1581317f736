"""Camera-to-BEV view transforms (Lift-Splat), their pure-torch pooling
and the fused Triton pooling of the GPU path."""
from .bev_pool import bev_pool, flat_cell_index
from .bev_pool_triton import bev_pool_depth_context, triton_available
from .lss_view_transform import (BaseLSSViewTransform, DepthLSSViewTransform,
                                 LSSViewTransform)

__all__ = [
    'bev_pool', 'flat_cell_index', 'bev_pool_depth_context',
    'triton_available', 'BaseLSSViewTransform', 'LSSViewTransform',
    'DepthLSSViewTransform'
]
