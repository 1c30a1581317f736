"""Assigners, match costs and box coders of fuller's heads."""
from .hungarian_assigner_3d import (BEVCenterL1Cost, Box3DIoUCost,
                                    QueryHungarianAssigner3D)
from .transfusion_det_coder import (CODE_SIZE, CODE_SLICES,
                                    TransFusionDetCoder, axis_aligned_corners,
                                    center_heatmap_targets, gaussian_radius)

__all__ = [
    'BEVCenterL1Cost', 'Box3DIoUCost', 'QueryHungarianAssigner3D',
    'TransFusionDetCoder', 'CODE_SIZE', 'CODE_SLICES',
    'center_heatmap_targets', 'gaussian_radius', 'axis_aligned_corners'
]
