"""Task heads on the shared BEV map."""
from .bev_map_seg_head import BEVMapSegHead
from .transfusion_det_head import QueryDecoderLayer, TransFusionDetHead

__all__ = ['TransFusionDetHead', 'QueryDecoderLayer', 'BEVMapSegHead']
