"""BEVMapIoUMetric against IoUs computed by hand on 2 x 2 maps."""
import math

import pytest
import torch
from mmdet3d.registry import METRICS
from mmdet3d.structures import Det3DDataSample

from fuller.evaluation.metrics import BEVMapIoUMetric

CLASSES = ('a', 'b')
THRESHOLDS = (0.3, 0.5, 0.7)


def _sample(pred, gt, as_dict=True):
    data_sample = Det3DDataSample()
    data_sample.pred_masks_bev = torch.tensor(pred).view(2, 2, 2)
    data_sample.gt_masks_bev = torch.tensor(gt, dtype=torch.bool).view(
        2, 2, 2)
    return data_sample.to_dict() if as_dict else data_sample


# class a / class b, cells in (row, col) order
SAMPLES = [
    ([0.9, 0.6, 0.4, 0.1, 0.2, 0.8, 0.75, 0.65],
     [1, 1, 0, 1, 0, 1, 1, 0]),
    ([0.0, 0.0, 0.0, 0.0, 0.9, 0.9, 0.9, 0.9],
     [0, 0, 0, 1, 1, 1, 1, 1]),
]
# summed counts (tp, fp, fn) per threshold:
#   a: 0.3 -> (2, 1, 2) = 2/5; 0.5 -> (2, 0, 2) = 1/2; 0.7 -> (1, 0, 3) = 1/4
#   b: 0.3 -> (6, 1, 0) = 6/7; 0.5 -> (6, 1, 0) = 6/7; 0.7 -> (6, 0, 0) = 1
EXPECTED = {
    'a/IoU@0.30': 2 / 5, 'a/IoU@0.50': 1 / 2, 'a/IoU@0.70': 1 / 4,
    'b/IoU@0.30': 6 / 7, 'b/IoU@0.50': 6 / 7, 'b/IoU@0.70': 1.0,
    'a/IoU@max': 1 / 2, 'b/IoU@max': 1.0,
    'mIoU@0.5': (1 / 2 + 6 / 7) / 2, 'mIoU@max': (1 / 2 + 1.0) / 2,
}


def _metric():
    return BEVMapIoUMetric(classes=CLASSES, thresholds=THRESHOLDS)


def test_hand_computed_iou():
    metric = _metric()
    metric.process({}, [_sample(*s) for s in SAMPLES])
    results = metric.compute_metrics(metric.results)
    assert set(results) == set(EXPECTED)
    for key, value in EXPECTED.items():
        assert results[key] == pytest.approx(value), key


def test_counts_are_summed_not_averaged_per_sample():
    # what ranks gather are counts: splitting the samples changes nothing,
    # and the result differs from a mean of per-sample IoUs
    rank0, rank1 = _metric(), _metric()
    rank0.process({}, [_sample(*SAMPLES[0])])
    rank1.process({}, [_sample(*SAMPLES[1], as_dict=False)])
    merged = rank0.compute_metrics(rank0.results + rank1.results)
    assert merged['a/IoU@0.30'] == pytest.approx(2 / 5)
    per_sample_mean = (2 / 4 + 0.0) / 2
    assert merged['a/IoU@0.30'] != pytest.approx(per_sample_mean)


def test_evaluate_through_registry_has_prefix_and_default_thresholds():
    metric = METRICS.build(dict(type='BEVMapIoUMetric'))
    assert metric.thresholds == pytest.approx(
        (0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65))
    data_sample = Det3DDataSample()
    gt = torch.zeros(6, 4, 6, dtype=torch.bool)
    gt[0, 1:3, 2:5] = True                             # 6 cells
    pred = torch.zeros(6, 4, 6)
    pred[0, 1:3, 3:6] = 0.6                            # 6 cells, 4 overlap
    data_sample.gt_masks_bev, data_sample.pred_masks_bev = gt, pred
    metric.process({}, [data_sample.to_dict()])
    results = metric.evaluate(1)
    assert results['map/drivable_area/IoU@0.50'] == pytest.approx(4 / 8)
    assert results['map/drivable_area/IoU@0.65'] == 0.0
    # other classes: no GT and no prediction -> undefined, not counted
    assert math.isnan(results['map/divider/IoU@0.50'])
    assert results['map/mIoU@0.5'] == pytest.approx(0.5)
    assert results['map/mIoU@max'] == pytest.approx(0.5)


def test_shape_mismatch_and_missing_field():
    metric = _metric()
    bad = dict(pred_masks_bev=torch.zeros(2, 3, 3),
               gt_masks_bev=torch.zeros(2, 3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match='pred_masks_bev'):
        metric.process({}, [bad])
    with pytest.raises(KeyError, match='gt_masks_bev'):
        metric.process({}, [dict(pred_masks_bev=torch.zeros(2, 3, 3))])
