"""Evaluation of fuller: the metrics (``fuller.evaluation.metrics``,
registered in mmdet3d's METRICS) and the pure-Python submission, map-
prediction and study helpers.

The metrics import mmdet3d's evaluation code (and through it mmdet3d's
models and spconv), so they load on first use: ``from fuller.evaluation
import BEVMapIoUMetric`` works, and ``import fuller`` makes mmdet3d's
METRICS registry import them (``fuller.REGISTERING_PACKAGES``). Importing a
helper module such as ``fuller.evaluation.submission`` stays light.
"""
_METRICS = ('BEVMapIoUMetric', 'DEFAULT_THRESHOLDS', 'BEVMapPredictionWriter',
            'NuScenesSubmissionMetric')


def __getattr__(name):
    if name in _METRICS:
        from . import metrics
        return getattr(metrics, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = list(_METRICS)
