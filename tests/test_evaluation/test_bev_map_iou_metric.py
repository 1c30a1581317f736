"""BEVMapIoUMetric against IoUs computed by hand on 2 x 2 maps, and against
an independent numpy computation of BEVFusion's published definition."""
import math

import numpy as np
import pytest
import torch
from mmdet3d.registry import METRICS
from mmdet3d.structures import Det3DDataSample

from fuller.datasets.map_mask_io import MAP_CLASSES
from fuller.evaluation.metrics import BEVMapIoUMetric
from fuller.evaluation.metrics.bev_map_iou_metric import DEFAULT_THRESHOLDS

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


# ------------------------------------------------ the published definition
def published_ious(preds, gts, thresholds):
    """BEVFusion's evaluate_map in numpy, written from its definition: per
    class and float32 threshold, TP/FP/FN summed over every cell of every
    sample, then one IoU. Returns (T, M)."""
    thr = np.asarray(thresholds, np.float32)[:, None, None, None]
    counts = np.zeros((3, len(thresholds), preds[0].shape[0]), np.int64)
    for pred, gt in zip(preds, gts):
        pos = pred[None] >= thr
        counts += np.stack([(pos & gt).sum((2, 3)), (pos & ~gt).sum((2, 3)),
                            (~pos & gt).sum((2, 3))])
    tp, fp, fn = counts
    return tp / (tp + fp + fn)


def hand_made_split(seed, classes=6, shape=(12, 20), samples=5):
    """Blob-shaped ground truth and noisy probabilities on a non-square
    grid, with some probabilities exactly at float32 thresholds."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[:shape[0], :shape[1]]
    preds, gts = [], []
    for _ in range(samples):
        gt = np.zeros((classes, *shape), bool)
        for c in range(classes):
            cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
            gt[c] = ((ys - cy) / (1 + c)) ** 2 + ((xs - cx) / 4) ** 2 < 1.5
        prob = np.clip(0.5 + 0.35 * (gt - 0.5) * 2
                       + rng.normal(0, 0.2, gt.shape), 0, 1)
        edge = rng.random(gt.shape) < 0.05
        prob[edge] = rng.choice(np.float32(DEFAULT_THRESHOLDS), edge.sum())
        preds.append(prob.astype(np.float32))
        gts.append(gt)
    return preds, gts


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_matches_published_definition_on_hand_made_masks(dtype):
    preds, gts = hand_made_split(seed=3)
    metric = METRICS.build(dict(type='BEVMapIoUMetric'))
    for pred, gt in zip(preds, gts):
        sample = Det3DDataSample()
        sample.pred_masks_bev = torch.from_numpy(pred).to(dtype)
        sample.gt_masks_bev = torch.from_numpy(gt)
        metric.process({}, [sample.to_dict()])
    results = metric.evaluate(len(preds))
    iou = published_ious(preds, gts, DEFAULT_THRESHOLDS)
    assert np.isfinite(iou).all() and (iou > 0).all() and (iou < 1).all()
    for c, name in enumerate(MAP_CLASSES):
        for t, thr in enumerate(DEFAULT_THRESHOLDS):
            assert results[f'map/{name}/IoU@{thr:.2f}'] == pytest.approx(
                iou[t, c], rel=1e-12), (name, thr)
        assert results[f'map/{name}/IoU@max'] == pytest.approx(
            iou[:, c].max(), rel=1e-12)
    fixed = DEFAULT_THRESHOLDS.index(0.5)
    assert results['map/mIoU@0.5'] == pytest.approx(
        iou[fixed].mean(), rel=1e-12)
    assert results['map/mIoU@max'] == pytest.approx(
        iou.max(0).mean(), rel=1e-12)
    # the thresholds matter here, and differ from a per-sample mean
    assert iou[:, 0].max() > iou[:, 0].min()
    per_sample = np.mean([published_ious([p], [g], [0.5])[0]
                          for p, g in zip(preds, gts)], axis=0)
    assert not np.allclose(per_sample, iou[fixed])


def test_float32_threshold_edge_counts_as_positive():
    """A probability equal to float32(0.35) is positive at 0.35, even when
    handed over in float64 (BEVFusion compares against float32
    thresholds)."""
    edge = float(np.float32(0.35))
    assert edge < 0.35
    metric = BEVMapIoUMetric(classes=('a', ), thresholds=(0.35, ))
    metric.process({}, [dict(
        pred_masks_bev=torch.tensor([[[edge, 0.0]]], dtype=torch.float64),
        gt_masks_bev=torch.tensor([[[True, False]]]))])
    assert metric.compute_metrics(metric.results)['a/IoU@0.35'] == 1.0
