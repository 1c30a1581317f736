"""Metrics of fuller (detection uses mmdet3d's NuScenesMetric)."""
from .bev_map_iou_metric import DEFAULT_THRESHOLDS, BEVMapIoUMetric

__all__ = ['BEVMapIoUMetric', 'DEFAULT_THRESHOLDS']
