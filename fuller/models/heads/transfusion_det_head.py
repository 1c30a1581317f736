"""TransFusion-style query detection head on the shared BEV map.

Shorthand: B batch, C input channels, H hidden channels, Y/X BEV cells,
NC classes, P object queries (proposals), G ground-truth boxes, E = 10 code
size (``fuller.models.task_modules.transfusion_det_coder``).

Frame: the (augmented) LiDAR frame. The input map is (B, C, Y, X) on
``input_grid`` (a ``BEVGrid``): row = y, column = x, row 0 at the smallest y. Query
positions are continuous grid coordinates ``(gx, gy)`` in cells; cell
``(iy, ix)`` has its centre at ``(ix + 0.5, iy + 0.5)`` and metric
``x = x_min + gx * dx``. Output boxes are ``LiDARInstance3DBoxes`` (box_dim 9:
x, y, z, l, w, h, yaw, vx, vy; bottom-centre origin).

Pipeline (after TransFusion, Bai et al., CVPR 2022):

1. 3x3 conv C -> H; a conv branch predicts a dense class heatmap
   (B, NC, Y, X), trained with a Gaussian focal loss on centre heatmaps.
2. Local maxima (max-pool NMS) of the sigmoid heatmap; the top-P
   (class, cell) pairs become queries: BEV feature at the cell plus a class
   embedding, positioned at the cell centre.
3. L decoder layers (self-attention among queries, cross-attention to all
   Y*X cells; positions through learned MLPs). After each layer, FFN heads
   predict centre offset, height, log dims, sin/cos yaw, velocity and class
   logits; predicted centres become the next layer's query positions.
4. Training: Hungarian matching per layer, sigmoid focal class loss and
   code-weighted L1 on codes (optional axis-aligned IoU loss).
5. Inference: score = sigmoid(class logit) * heatmap score of the query's
   cell, kept only for the query's own heatmap class.
"""
import warnings
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet.models.utils import multi_apply
from mmdet.utils import reduce_mean
from mmdet3d.models.utils import clip_sigmoid
from mmdet3d.registry import MODELS, TASK_UTILS
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn

from fuller.models.task_modules.transfusion_det_coder import (
    CODE_SLICES, TransFusionDetCoder, axis_aligned_corners,
    center_heatmap_targets, code_weights_tensor)
from fuller.structures.geometry import as_bev_grid

DEFAULT_ASSIGNER = dict(
    type='QueryHungarianAssigner3D',
    cls_cost=dict(type='mmdet.FocalLossCost', gamma=2.0, alpha=0.25,
                  weight=0.15),
    reg_cost=dict(type='BEVCenterL1Cost', weight=0.25),
    iou_cost=dict(type='Box3DIoUCost', weight=0.25))
DEFAULT_LOSS_CLS = dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0,
                        alpha=0.25, reduction='mean', loss_weight=1.0)
DEFAULT_LOSS_BBOX = dict(type='mmdet.L1Loss', reduction='mean',
                         loss_weight=0.25)
DEFAULT_LOSS_HEATMAP = dict(type='mmdet.GaussianFocalLoss', reduction='mean',
                            loss_weight=1.0)


def _pos_mlp(channels: int) -> nn.Module:
    """(..., 2) grid-normalised positions -> (..., H) embeddings."""
    return nn.Sequential(
        nn.Linear(2, channels), nn.ReLU(inplace=True),
        nn.Linear(channels, channels))


class QueryDecoderLayer(nn.Module):
    """Post-norm transformer decoder layer: self-attn, cross-attn, FFN.

    Args:
        channels: H, the width of queries and keys.
        num_heads: attention heads of both attentions.
        ffn_channels: hidden width of the FFN.
        dropout: dropout rate of the attentions, the FFN and the residuals.
    """

    def __init__(self, channels: int, num_heads: int, ffn_channels: int,
                 dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(
            channels, num_heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(
            channels, num_heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(
            nn.Linear(channels, ffn_channels), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(ffn_channels, channels))
        self.norms = nn.ModuleList(nn.LayerNorm(channels) for _ in range(3))
        self.dropout = nn.Dropout(dropout)
        self.query_pos_mlp = _pos_mlp(channels)
        self.key_pos_mlp = _pos_mlp(channels)

    def forward(self, query: Tensor, key: Tensor, query_pos: Tensor,
                key_pos: Tensor) -> Tensor:
        """query (B, P, H), key (B, Y*X, H), query_pos (B, P, 2),
        key_pos (1, Y*X, 2), positions scaled to [0, 1] -> (B, P, H)."""
        qp = self.query_pos_mlp(query_pos)
        kp = self.key_pos_mlp(key_pos)
        q = query + qp
        out = self.self_attn(q, q, query, need_weights=False)[0]
        query = self.norms[0](query + self.dropout(out))
        out = self.cross_attn(query + qp, key + kp, key, need_weights=False)[0]
        query = self.norms[1](query + self.dropout(out))
        return self.norms[2](query + self.dropout(self.ffn(query)))


@MODELS.register_module()
class TransFusionDetHead(BaseModule):
    """Query-based 3D detection head (see the module docstring).

    Args:
        in_channels: C of the shared BEV map.
        num_classes: NC.
        input_grid: the BEV grid of the input map, a ``BEVGrid`` or
            ``dict(x_range, y_range, cell_size)`` (a model config holds
            the BEV grid its declared geometry gives).
        num_proposals: P queries.
        hidden_channels, num_decoder_layers, num_heads, ffn_channels,
            dropout: transformer size.
        head_conv: width of the FFN prediction heads.
        nms_kernel_size: max-pool window of the heatmap local-max step.
        nms_free_classes: classes exempt from the local-max step (small
            objects, e.g. pedestrian / traffic cone on nuScenes).
        gaussian_overlap, min_radius: centre-heatmap target settings.
        code_weights: 10 L1 weights in code order (see ``CODE_SLICES``).
        aux_loss: also supervise every earlier decoder layer
            (keys ``d{i}.loss_cls`` / ``d{i}.loss_bbox``).
        assigner, loss_cls, loss_bbox, loss_heatmap, loss_iou: configs.
        score_threshold: predictions with score <= this are dropped.
    """

    def __init__(self,
                 *,
                 in_channels: int,
                 num_classes: int,
                 input_grid,
                 num_proposals: int = 200,
                 hidden_channels: int = 128,
                 num_decoder_layers: int = 1,
                 num_heads: int = 8,
                 ffn_channels: int = 256,
                 dropout: float = 0.1,
                 head_conv: int = 64,
                 nms_kernel_size: int = 3,
                 nms_free_classes: Sequence[int] = (),
                 gaussian_overlap: float = 0.1,
                 min_radius: int = 2,
                 code_weights: Sequence[float] = (1.0, ) * 8 + (0.2, 0.2),
                 aux_loss: bool = True,
                 assigner: Optional[dict] = None,
                 loss_cls: Optional[dict] = None,
                 loss_bbox: Optional[dict] = None,
                 loss_heatmap: Optional[dict] = None,
                 loss_iou: Optional[dict] = None,
                 score_threshold: float = 0.0,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.input_grid = as_bev_grid(input_grid)
        ny, nx = self.input_grid.shape
        if not 0 < num_proposals <= num_classes * ny * nx:
            raise ValueError(f'TransFusionDetHead: num_proposals '
                             f'{num_proposals} must be in [1, NC*Y*X]')
        if hidden_channels % num_heads:
            raise ValueError('TransFusionDetHead: hidden_channels must be '
                             'divisible by num_heads')
        if nms_kernel_size < 1 or nms_kernel_size % 2 == 0 or not all(
                0 <= c < num_classes for c in nms_free_classes):
            raise ValueError('TransFusionDetHead: nms_kernel_size must be '
                             'odd and nms_free_classes valid class indices')
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.num_proposals = num_proposals
        self.nms_kernel_size = nms_kernel_size
        self.nms_free_classes = tuple(nms_free_classes)
        self.gaussian_overlap = gaussian_overlap
        self.min_radius = min_radius
        self.aux_loss = aux_loss
        self.score_threshold = score_threshold
        self.coder = TransFusionDetCoder(self.input_grid)
        self.register_buffer('code_weights', code_weights_tensor(
            code_weights), persistent=False)

        self._init_layers(hidden_channels, num_decoder_layers, num_heads,
                          ffn_channels, dropout, head_conv)
        self.assigner = TASK_UTILS.build(assigner or DEFAULT_ASSIGNER)
        self.loss_cls = MODELS.build(loss_cls or DEFAULT_LOSS_CLS)
        self.loss_bbox = MODELS.build(loss_bbox or DEFAULT_LOSS_BBOX)
        self.loss_heatmap = MODELS.build(loss_heatmap or DEFAULT_LOSS_HEATMAP)
        self.loss_iou = None if loss_iou is None else MODELS.build(loss_iou)

    def _init_layers(self, hidden_channels: int, num_decoder_layers: int,
                     num_heads: int, ffn_channels: int, dropout: float,
                     head_conv: int) -> None:
        ny, nx = self.input_grid.shape
        self.shared_conv = nn.Conv2d(self.in_channels, hidden_channels, 3,
                                     padding=1)
        self.heatmap_head = nn.Sequential(
            ConvModule(hidden_channels, hidden_channels, 3, padding=1,
                       norm_cfg=dict(type='BN2d')),
            nn.Conv2d(hidden_channels, self.num_classes, 3, padding=1))
        self.class_embedding = nn.Linear(self.num_classes, hidden_channels)
        self.decoder = nn.ModuleList(
            QueryDecoderLayer(hidden_channels, num_heads, ffn_channels,
                              dropout) for _ in range(num_decoder_layers))
        heads = {name: (s.stop - s.start, 2) for name, s in CODE_SLICES.items()}
        heads['cls'] = (self.num_classes, 2)
        with warnings.catch_warnings():
            # mmcv's ConvModule warns of a conv bias before a norm; the bias
            # (bias=True, as BEVFusion's TransFusion prediction heads) is
            # part of this head's parameters and checkpoints.
            warnings.filterwarnings(
                'ignore', message='Unnecessary conv bias before batch/instance norm',
                category=UserWarning, module=r'mmcv\.cnn\.bricks\.conv_module\Z')
            self.pred_heads = nn.ModuleList(
                MODELS.build(dict(type='SeparateHead', in_channels=hidden_channels,
                                  heads=heads, head_conv=head_conv,
                                  conv_cfg=dict(type='Conv1d'),
                                  norm_cfg=dict(type='BN1d'), bias=True))
                for _ in range(num_decoder_layers))
        self._init_class_bias()
        gy, gx = torch.meshgrid(torch.arange(ny) + 0.5,
                                torch.arange(nx) + 0.5, indexing='ij')
        self.register_buffer('cell_centers', torch.stack(
            [gx.flatten(), gy.flatten()], -1), persistent=False)  # (Y*X, 2)
        self.register_buffer('grid_size', torch.tensor(
            [float(nx), float(ny)]), persistent=False)

    def _init_class_bias(self) -> None:
        """Class-logit prior of sigmoid(-2.19) = 0.1 (dense and per query)."""
        nn.init.constant_(self.heatmap_head[-1].bias, -2.19)
        for pred_head in self.pred_heads:
            nn.init.constant_(pred_head.cls[-1].bias, -2.19)

    def init_weights(self) -> None:
        super().init_weights()
        self._init_class_bias()

    # ------------------------------------------------------------ forward
    def check_input(self, feats_bev: Tensor) -> None:
        """Raise a clear error when the map does not fit the head's grid."""
        if feats_bev.dim() != 4 or feats_bev.shape[1] != self.in_channels \
                or tuple(feats_bev.shape[-2:]) != self.input_grid.shape:
            raise ValueError(
                f'TransFusionDetHead: expected a BEV map (B, '
                f'{self.in_channels}, Y, X) with (Y, X) = '
                f'{self.input_grid.shape} from the head grid {self.input_grid}, '
                f'got {tuple(feats_bev.shape)}. The decoder output stride '
                'and the input_grid of the head must describe the same grid '
                '(python tools/misc/sync_config.py CONFIG lists the keys that '
                'disagree with the declared geometry).')

    def forward(self, feats_bev: Tensor) -> Dict:
        """(B, C, Y, X) -> dict(dense_heatmap (B, NC, Y, X) logits,
        query_labels (B, P), query_scores (B, P, NC) heatmap probabilities
        at the query cells, layers: per decoder layer a dict of (B, P, k)
        outputs ``center`` (grid units), ``height``, ``dim``, ``rot``,
        ``vel``, ``cls`` (logits))."""
        self.check_input(feats_bev)
        bev = self.shared_conv(feats_bev)                  # (B, H, Y, X)
        dense_heatmap = self.heatmap_head(bev)
        cells, query_labels, query_scores = self._select_queries(
            dense_heatmap.detach().sigmoid())
        bev_flat = bev.flatten(2)                          # (B, H, Y*X)
        query = bev_flat.gather(
            2, cells[:, None].expand(-1, bev.shape[1], -1)).transpose(1, 2)
        query = query + self.class_embedding(
            F.one_hot(query_labels, self.num_classes).to(query.dtype))
        query_pos = self.cell_centers[cells]               # (B, P, 2)
        key = bev_flat.transpose(1, 2)                     # (B, Y*X, H)
        key_pos = (self.cell_centers / self.grid_size)[None]
        layers = []
        for layer, pred_head in zip(self.decoder, self.pred_heads):
            query = layer(query, key, query_pos / self.grid_size, key_pos)
            out = {name: value.transpose(1, 2) for name, value in
                   pred_head(query.transpose(1, 2)).items()}
            out['center'] = out['center'] + query_pos
            layers.append(out)
            query_pos = out['center'].detach()
        return dict(dense_heatmap=dense_heatmap, query_labels=query_labels,
                    query_scores=query_scores, layers=layers)

    @torch.no_grad()
    def _select_queries(self, heat: Tensor):
        """heat (B, NC, Y, X) probabilities -> flat cell index (B, P),
        class (B, P), heatmap scores of all classes at the cell (B, P, NC)."""
        k = self.nms_kernel_size
        peaks = heat
        if k > 1:
            keep = heat == F.max_pool2d(heat, k, stride=1, padding=k // 2)
            keep[:, list(self.nms_free_classes)] = True
            peaks = heat * keep
        num_cells = heat.shape[2] * heat.shape[3]
        top = peaks.flatten(1).topk(self.num_proposals, dim=1).indices
        labels, cells = top // num_cells, top % num_cells
        scores = heat.flatten(2).gather(
            2, cells[:, None].expand(-1, heat.shape[1], -1))
        return cells, labels, scores.transpose(1, 2)

    # --------------------------------------------------------------- loss
    def loss(self, feats_bev: Tensor, batch_data_samples: List) -> Dict:
        """Losses from the BEV map and data samples with ``gt_instances_3d``
        (``bboxes_3d`` LiDARInstance3DBoxes, ``labels_3d``)."""
        return self.loss_by_feat(
            self(feats_bev), [s.gt_instances_3d for s in batch_data_samples])

    def loss_by_feat(self, preds: Dict,
                     batch_gt_instances_3d: List[InstanceData]) -> Dict:
        device = preds['dense_heatmap'].device     # targets in float32
        gt_boxes = [g.bboxes_3d.tensor.to(device=device, dtype=torch.float32)
                    for g in batch_gt_instances_3d]
        gt_labels = [g.labels_3d.long().to(device)
                     for g in batch_gt_instances_3d]
        heat_targets = torch.stack([
            center_heatmap_targets(b, lab, self.input_grid, self.num_classes,
                                   self.gaussian_overlap, self.min_radius)
            for b, lab in zip(gt_boxes, gt_labels)])
        num_peaks = reduce_mean(heat_targets.eq(1).sum().float()).clamp(1)
        losses = dict(loss_heatmap=self.loss_heatmap(
            clip_sigmoid(preds['dense_heatmap'].float()), heat_targets,
            avg_factor=num_peaks))
        num_layers = len(preds['layers'])
        for i, layer in enumerate(preds['layers']):
            last = i == num_layers - 1
            if not (last or self.aux_loss):
                continue
            prefix = '' if last else f'd{i}.'
            for name, value in self._layer_losses(layer, gt_boxes,
                                                  gt_labels).items():
                losses[prefix + name] = value
        return losses

    def _layer_losses(self, layer: Dict, gt_boxes: List[Tensor],
                      gt_labels: List[Tensor]) -> Dict:
        codes = self.coder.pack(layer)                     # (B, P, E)
        labels, code_targets, positive = multi_apply(
            self.get_targets_single, list(codes), list(layer['cls']),
            gt_boxes, gt_labels)
        labels, code_targets = torch.stack(labels), torch.stack(code_targets)
        positive = torch.stack(positive)                   # (B, P) bool
        num_pos = reduce_mean(positive.sum().float()).clamp(1)
        code_w = positive[..., None] * self.code_weights   # (B, P, E)
        losses = dict(
            loss_cls=self.loss_cls(layer['cls'].flatten(0, 1).float(),
                                   labels.flatten(), avg_factor=num_pos),
            loss_bbox=self.loss_bbox(codes, code_targets, code_w,
                                     avg_factor=num_pos))
        if self.loss_iou is not None:
            losses['loss_iou'] = self.loss_iou(
                axis_aligned_corners(self.coder.decode(codes)).flatten(0, 1),
                axis_aligned_corners(self.coder.decode(code_targets)).flatten(0, 1),
                positive.flatten().to(codes.dtype), avg_factor=num_pos)
        return losses

    def get_targets_single(self, codes: Tensor, cls_logits: Tensor,
                           gt_boxes: Tensor, gt_labels: Tensor):
        """One sample: codes (P, E), cls_logits (P, NC), gt_boxes (G, 7|9)
        LiDAR, gt_labels (G,) -> class targets (P,) (NC = background),
        code targets (P, E), positive mask (P,)."""
        detached = codes.detach()
        gt_codes = self.coder.encode(gt_boxes)             # (G, E)
        pred = InstanceData(
            scores=cls_logits.detach(),
            centers_norm=self.coder.normalized_centers(detached),
            bboxes_3d=self.coder.decode(detached))
        gt = InstanceData(
            labels=gt_labels,
            centers_norm=self.coder.normalized_centers(gt_codes),
            bboxes_3d=gt_boxes)
        gt_inds = self.assigner.assign(pred, gt).gt_inds   # (P,) 0 = none
        positive = gt_inds > 0
        labels = gt_labels.new_full(gt_inds.shape, self.num_classes)
        code_targets = codes.new_zeros(codes.shape)
        if len(gt_boxes):
            matched = (gt_inds - 1).clamp(min=0)
            labels = torch.where(positive, gt_labels[matched], labels)
            code_targets = torch.where(positive[:, None], gt_codes[matched],
                                       code_targets)
        return labels, code_targets, positive

    # ------------------------------------------------------------ predict
    def predict(self, feats_bev: Tensor,
                batch_data_samples: List) -> List[InstanceData]:
        """BEV map -> per sample InstanceData(bboxes_3d, scores_3d,
        labels_3d) in the LiDAR frame."""
        return self.predict_by_feat(self(feats_bev))

    def predict_by_feat(self, preds: Dict) -> List[InstanceData]:
        layer = preds['layers'][-1]
        own_class = F.one_hot(preds['query_labels'], self.num_classes)
        scores = layer['cls'].sigmoid() * preds['query_scores'] * own_class
        scores, labels = scores.max(dim=-1)                # (B, P)
        boxes = self.coder.decode(self.coder.pack(layer))  # (B, P, 9)
        results = []
        for sample_boxes, sample_scores, sample_labels in zip(
                boxes, scores, labels):
            keep = sample_scores > self.score_threshold
            order = sample_scores[keep].argsort(descending=True)
            results.append(InstanceData(
                bboxes_3d=LiDARInstance3DBoxes(
                    sample_boxes[keep][order], box_dim=9),
                scores_3d=sample_scores[keep][order],
                labels_3d=sample_labels[keep][order]))
        return results
