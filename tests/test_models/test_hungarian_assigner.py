"""Query-to-GT matching: costs on hand-made boxes, assignment on hand-made
cost matrices (checked against brute force)."""
import itertools
import math

import pytest
import torch
from mmdet3d.registry import TASK_UTILS
from mmengine.structures import InstanceData

from fuller.models.task_modules import (BEVCenterL1Cost, Box3DIoUCost,
                                        QueryHungarianAssigner3D)


def _assigner(iou: bool = True) -> QueryHungarianAssigner3D:
    return TASK_UTILS.build(dict(
        type='QueryHungarianAssigner3D',
        cls_cost=dict(type='mmdet.FocalLossCost', gamma=2.0, alpha=0.25,
                      weight=0.15),
        reg_cost=dict(type='BEVCenterL1Cost', weight=0.25),
        iou_cost=dict(type='Box3DIoUCost', weight=0.25) if iou else None))


def test_assign_from_hand_made_cost():
    cost = torch.tensor([[1.0, 9.0], [2.0, 3.0], [0.5, 8.0]])
    result = QueryHungarianAssigner3D.assign_from_cost(
        cost, torch.tensor([4, 7]))
    # optimum 0.5 (query 2 -> gt 0) + 3 (query 1 -> gt 1) = 3.5
    assert result.gt_inds.tolist() == [0, 2, 1]
    assert result.labels.tolist() == [-1, 7, 4]
    assert result.num_gts == 2


def test_assign_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        cost = torch.rand(5, 3, generator=gen)
        gt_inds = QueryHungarianAssigner3D.assign_from_cost(
            cost, torch.zeros(3, dtype=torch.long)).gt_inds
        total = sum(cost[q, g - 1] for q, g in enumerate(gt_inds.tolist())
                    if g > 0)
        best = min(sum(cost[q, g] for g, q in enumerate(perm))
                   for perm in itertools.permutations(range(5), 3))
        assert (gt_inds > 0).sum() == 3
        assert total == pytest.approx(float(best), abs=1e-6)


def test_non_finite_cost_raises():
    with pytest.raises(ValueError, match='NaN/inf'):
        QueryHungarianAssigner3D.assign_from_cost(
            torch.tensor([[float('nan')]]), torch.tensor([0]))


def test_center_l1_cost_hand_value():
    pred = InstanceData(centers_norm=torch.tensor([[0.1, 0.2], [0.5, 0.5]]))
    gt = InstanceData(centers_norm=torch.tensor([[0.4, 0.6]]))
    cost = BEVCenterL1Cost(weight=2.0)(pred, gt)
    assert torch.allclose(cost, torch.tensor([[1.4], [0.4]]))


def test_iou_cost_hand_values():
    # two 2 x 2 x 2 m cubes shifted 1 m in x: overlap 4, union 12 -> 1/3;
    # also shifted 1 m up: overlap 2, union 14 -> 1/7 (BEV still 1/3)
    gt = torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    pred = torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0],
                         [1.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0],
                         [1.0, 0.0, 1.0, 2.0, 2.0, 2.0, 0.0],
                         [0.0, 0.0, 0.0, 2.0, 2.0, 2.0, math.pi / 2]])
    p, g = InstanceData(bboxes_3d=pred), InstanceData(bboxes_3d=gt)
    cost_3d = Box3DIoUCost(weight=0.5, mode='3d')(p, g)
    cost_bev = Box3DIoUCost(weight=1.0, mode='bev')(p, g)
    assert torch.allclose(cost_3d[:, 0],
                          -0.5 * torch.tensor([1, 1 / 3, 1 / 7, 1.0]),
                          atol=1e-4)
    assert torch.allclose(cost_bev[:, 0],
                          -torch.tensor([1, 1 / 3, 1 / 3, 1.0]), atol=1e-4)
    with pytest.raises(ValueError, match='mode'):
        Box3DIoUCost(mode='2d')


def _instances(boxes, labels, num_classes, logits=None):
    grid_extent = torch.tensor([20.0, 10.0])           # x, y extent (m)
    centers = (boxes[:, :2] + grid_extent / 2) / grid_extent
    out = InstanceData(bboxes_3d=boxes, centers_norm=centers)
    if logits is None:
        out.labels = labels
    else:
        out.scores = logits
    return out


def test_assigner_recovers_permuted_perfect_queries():
    gt_boxes = torch.tensor([[-5.0, 2.0, -1.0, 4.0, 2.0, 1.5, 0.3],
                             [3.0, -1.0, -1.0, 0.8, 0.8, 1.7, 0.0],
                             [6.0, 3.0, -1.0, 4.5, 2.0, 1.6, 1.2]])
    gt_labels = torch.tensor([0, 2, 0])
    far = torch.tensor([[9.0, -4.0, -1.0, 1.0, 1.0, 1.0, 0.0]])
    # queries: gt 2, far, gt 0, far, gt 1
    order = [2, None, 0, None, 1]
    boxes = torch.cat([gt_boxes[i:i + 1] if i is not None else far
                       for i in order])
    logits = torch.full((5, 3), -4.0)
    for q, i in enumerate(order):
        if i is not None:
            logits[q, gt_labels[i]] = 4.0
    pred = _instances(boxes, None, 3, logits)
    gt = _instances(gt_boxes, gt_labels, 3)
    result = _assigner().assign(pred, gt)
    assert result.gt_inds.tolist() == [3, 0, 1, 0, 2]
    assert result.labels.tolist() == [0, -1, 0, -1, 2]


def test_assigner_empty_gt():
    pred = _instances(torch.zeros(4, 7) + 1, None, 3, torch.zeros(4, 3))
    gt = _instances(torch.zeros(0, 7), torch.zeros(0, dtype=torch.long), 3)
    result = _assigner().assign(pred, gt)
    assert result.gt_inds.tolist() == [0, 0, 0, 0]
    assert result.labels.tolist() == [-1] * 4
