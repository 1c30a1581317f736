"""Metrics of fuller (detection uses mmdet3d's NuScenesMetric)."""
from .bev_map_iou_metric import DEFAULT_THRESHOLDS, BEVMapIoUMetric
from .map_prediction_writer import BEVMapPredictionWriter
from .nuscenes_submission_metric import NuScenesSubmissionMetric

__all__ = ['BEVMapIoUMetric', 'DEFAULT_THRESHOLDS', 'BEVMapPredictionWriter',
           'NuScenesSubmissionMetric']
