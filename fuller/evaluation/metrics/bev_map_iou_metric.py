"""BEV map segmentation IoU, per class and per threshold.

Shorthand: T thresholds, M map classes, Y/X map-grid cells.

Frame: masks are (M, Y, X) on the map grid of the (augmented) LiDAR frame;
predictions and ground truth must share that grid.

``process`` keeps only integer true/false-positive and false-negative
counts (T, M) per sample, so what mmengine gathers across ranks are sums
and the result does not depend on how samples were split.

Definition (BEVFusion's ``evaluate_map``, which FULLER's tables follow):
per class and threshold t, a cell is positive when ``prob >= t`` (t as
float32), and TP, FP, FN are summed over every cell of every sample of the
split before one ``IoU = TP / (TP + FP + FN)`` is taken (not a mean of
per-sample IoUs). Counts are exact int64 (BEVFusion sums them in float32).

Reported keys (under the ``map/`` prefix):

- ``<class>/IoU@<t>`` for every threshold t: that IoU;
- ``<class>/IoU@max``: its maximum over the thresholds;
- ``mIoU@0.5``: mean over classes of the IoU at the fixed threshold 0.5 (a
  threshold not chosen on the evaluated split);
- ``mIoU@max``: mean over classes of ``<class>/IoU@max`` -- BEVFusion's
  ``map/mean/iou@max``, the number published tables report (each class's
  threshold picked on the evaluated split).

A class with no ground-truth and no predicted cell over the whole split at
a threshold has an undefined IoU (NaN) and is left out of the class means;
BEVFusion's ``+ 1e-7`` in the denominator makes it 0 and averages it in.
This is the only difference; it matters only for a class that neither
occurs in the split's ground truth nor is ever predicted.
"""
import warnings
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from mmdet3d.registry import METRICS
from mmengine.evaluator import BaseMetric

from fuller.structures import MAP_CLASSES

DEFAULT_THRESHOLDS = (0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65)


@METRICS.register_module()
class BEVMapIoUMetric(BaseMetric):
    """IoU of thresholded map probabilities against boolean map masks.

    Args:
        classes: class names in channel order.
        thresholds: probability thresholds; a cell is predicted positive
            when ``prob >= t``.
        fixed_threshold: threshold of the ``mIoU@<t>`` key (added to
            ``thresholds`` if missing).
        collect_device, prefix: as mmengine's ``BaseMetric``.
    """
    default_prefix: Optional[str] = 'map'

    def __init__(self,
                 classes: Sequence[str] = MAP_CLASSES,
                 thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
                 fixed_threshold: float = 0.5,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.classes = tuple(classes)
        thresholds = sorted(set(float(t) for t in thresholds) |
                            {float(fixed_threshold)})
        if not all(0.0 <= t <= 1.0 for t in thresholds):
            raise ValueError(f'BEVMapIoUMetric: thresholds must lie in '
                             f'[0, 1], got {thresholds}')
        self.thresholds = tuple(thresholds)
        self.fixed_threshold = float(fixed_threshold)

    def process(self, data_batch, data_samples: Sequence) -> None:
        """Accumulate (T, M) counts from samples holding ``pred_masks_bev``
        (float (M, Y, X)) and ``gt_masks_bev`` (bool (M, Y, X))."""
        for sample in data_samples:
            pred = torch.as_tensor(_field(sample, 'pred_masks_bev'))
            gt = torch.as_tensor(_field(sample, 'gt_masks_bev')).bool()
            if pred.shape != gt.shape or pred.shape[0] != len(self.classes):
                raise ValueError(
                    f'BEVMapIoUMetric: pred_masks_bev {tuple(pred.shape)} and '
                    f'gt_masks_bev {tuple(gt.shape)} must both be '
                    f'({len(self.classes)}, Y, X)')
            # float32 thresholds, as BEVFusion's evaluate_map: a float32
            # probability equal to float32(0.35) counts as >= 0.35
            thr = torch.tensor(self.thresholds, dtype=torch.float32,
                               device=pred.device).view(-1, 1, 1, 1)
            pred_pos = pred[None] >= thr                  # (T, M, Y, X)
            gt = gt[None].to(pred_pos.device)
            self.results.append(dict(
                tp=_count(pred_pos & gt), fp=_count(pred_pos & ~gt),
                fn=_count(~pred_pos & gt)))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        tp, fp, fn = (np.sum([r[k] for r in results], axis=0)
                      for k in ('tp', 'fp', 'fn'))
        denom = tp + fp + fn
        with np.errstate(invalid='ignore', divide='ignore'):
            iou = np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)
        metrics = {}
        for c, name in enumerate(self.classes):
            for t, thr in enumerate(self.thresholds):
                metrics[f'{name}/IoU@{thr:.2f}'] = float(iou[t, c])
            metrics[f'{name}/IoU@max'] = float(_nan_reduce(np.nanmax,
                                                           iou[:, c]))
        fixed = self.thresholds.index(self.fixed_threshold)
        metrics[f'mIoU@{self.fixed_threshold:g}'] = float(
            _nan_reduce(np.nanmean, iou[fixed]))
        metrics['mIoU@max'] = float(_nan_reduce(
            np.nanmean, [_nan_reduce(np.nanmax, iou[:, c])
                         for c in range(len(self.classes))]))
        return metrics


def _field(sample, key: str):
    value = sample.get(key, None)
    if value is None:
        raise KeyError(f'BEVMapIoUMetric: data sample has no {key!r}')
    return value


def _count(mask: torch.Tensor) -> np.ndarray:
    """(T, M, Y, X) bool -> (T, M) int64 counts."""
    return mask.sum(dim=(-1, -2)).cpu().numpy().astype(np.int64)


def _nan_reduce(fn, values) -> float:
    """``np.nanmax`` / ``np.nanmean`` that return NaN quietly when every
    value is NaN."""
    values = np.asarray(values, dtype=np.float64)
    if np.isnan(values).all():
        return float('nan')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        return float(fn(values))
