"""One-to-one matching of object queries to 3D ground-truth boxes.

Shorthand: P queries (predictions), G ground-truth boxes, NC classes, E code
size (see ``transfusion_det_coder``).

Frame: the (augmented) LiDAR frame. Costs read fields of two
``InstanceData``: predictions carry ``scores`` (P, NC) class logits,
``centers_norm`` (P, 2) centres scaled to [0, 1] over the BEV grid and
``bboxes_3d`` (P, 9) bottom-centre LiDAR boxes; ground truth carries
``labels`` (G,), ``centers_norm`` (G, 2) and ``bboxes_3d`` (G, >=7).

Classification cost: mmdet's ``FocalLossCost`` (config
``dict(type='mmdet.FocalLossCost', ...)``) reads exactly these fields.
"""
from typing import Optional

import torch
from mmdet.models.task_modules.assigners import AssignResult
from mmdet3d.registry import TASK_UTILS
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.structures import InstanceData
from scipy.optimize import linear_sum_assignment
from torch import Tensor


@TASK_UTILS.register_module()
class BEVCenterL1Cost:
    """L1 distance of BEV centres in grid-normalised units, times ``weight``.

    Returns a (P, G) cost.
    """

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def __call__(self, pred_instances: InstanceData,
                 gt_instances: InstanceData) -> Tensor:
        cost = torch.cdist(pred_instances.centers_norm,
                           gt_instances.centers_norm, p=1)
        return cost * self.weight


@TASK_UTILS.register_module()
class Box3DIoUCost:
    """Negative IoU of rotated LiDAR boxes, times ``weight``.

    Args:
        weight: cost scale.
        mode: ``'3d'`` (rotated BEV overlap times height overlap) or
            ``'bev'`` (rotated BEV IoU only).
    """

    def __init__(self, weight: float = 1.0, mode: str = '3d'):
        if mode not in ('3d', 'bev'):
            raise ValueError(f"Box3DIoUCost: mode must be '3d' or 'bev', "
                             f'got {mode!r}')
        self.weight = weight
        self.mode = mode

    def __call__(self, pred_instances: InstanceData,
                 gt_instances: InstanceData) -> Tensor:
        pred = LiDARInstance3DBoxes(pred_instances.bboxes_3d[:, :7])
        gt = LiDARInstance3DBoxes(gt_instances.bboxes_3d[:, :7])
        if self.mode == '3d':
            iou = LiDARInstance3DBoxes.overlaps(pred, gt, mode='iou')
        else:
            iou = _bev_iou(pred, gt)
        return -iou * self.weight


def _bev_iou(boxes1: LiDARInstance3DBoxes,
             boxes2: LiDARInstance3DBoxes) -> Tensor:
    """(P, G) rotated BEV IoU via mmcv's ``box_iou_rotated`` (CPU and CUDA)."""
    from mmcv.ops import box_iou_rotated
    return box_iou_rotated(boxes1.bev, boxes2.bev, mode='iou')


@TASK_UTILS.register_module()
class QueryHungarianAssigner3D:
    """Hungarian matching of P queries to G boxes on a weighted cost sum.

    ``cost = cls_cost + reg_cost + iou_cost`` (each built from TASK_UTILS,
    ``iou_cost`` optional), minimised with ``scipy``'s
    ``linear_sum_assignment``. Each GT gets exactly one query when P >= G.

    Args:
        cls_cost: e.g. ``dict(type='mmdet.FocalLossCost', weight=0.15)``.
        reg_cost: e.g. ``dict(type='BEVCenterL1Cost', weight=0.25)``.
        iou_cost: e.g. ``dict(type='Box3DIoUCost', weight=0.25)`` or None.
    """

    def __init__(self,
                 cls_cost: dict,
                 reg_cost: dict,
                 iou_cost: Optional[dict] = None):
        self.cls_cost = TASK_UTILS.build(cls_cost)
        self.reg_cost = TASK_UTILS.build(reg_cost)
        self.iou_cost = None if iou_cost is None else TASK_UTILS.build(
            iou_cost)

    @torch.no_grad()
    def cost_matrix(self, pred_instances: InstanceData,
                    gt_instances: InstanceData) -> Tensor:
        """(P, G) total matching cost."""
        cost = self.cls_cost(pred_instances, gt_instances)
        cost = cost + self.reg_cost(pred_instances, gt_instances)
        if self.iou_cost is not None:
            cost = cost + self.iou_cost(pred_instances, gt_instances)
        return cost

    def assign(self, pred_instances: InstanceData,
               gt_instances: InstanceData) -> AssignResult:
        """Match queries to GT boxes.

        Returns:
            mmdet ``AssignResult``: ``gt_inds`` (P,) is 0 for unmatched
            queries and ``1 + g`` for a query matched to GT ``g``;
            ``labels`` (P,) is the matched GT label or -1.
        """
        num_preds = len(pred_instances)
        num_gts = len(gt_instances)
        device = pred_instances.scores.device
        gt_inds = torch.zeros(num_preds, dtype=torch.long, device=device)
        labels = torch.full((num_preds, ), -1, dtype=torch.long,
                            device=device)
        if num_gts == 0 or num_preds == 0:
            return AssignResult(num_gts, gt_inds, None, labels=labels)
        cost = self.cost_matrix(pred_instances, gt_instances)
        return self.assign_from_cost(cost, gt_instances.labels)

    @staticmethod
    def assign_from_cost(cost: Tensor, gt_labels: Tensor) -> AssignResult:
        """Hungarian assignment on a given (P, G) cost matrix."""
        if not torch.isfinite(cost).all():
            raise ValueError('QueryHungarianAssigner3D: the matching cost '
                             'has NaN/inf entries (diverged predictions?)')
        num_preds, num_gts = cost.shape
        rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
        rows = torch.as_tensor(rows, dtype=torch.long, device=cost.device)
        cols = torch.as_tensor(cols, dtype=torch.long, device=cost.device)
        gt_inds = cost.new_zeros(num_preds, dtype=torch.long)
        gt_inds[rows] = cols + 1
        labels = gt_inds.new_full((num_preds, ), -1)
        labels[rows] = gt_labels.to(cost.device).long()[cols]
        return AssignResult(num_gts, gt_inds, None, labels=labels)
