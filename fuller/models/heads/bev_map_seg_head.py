"""BEV map segmentation head: resample the shared map to the map grid.

Shorthand: B batch, C input channels, M map classes (6), Y/X cells of the
input (decoder) grid, Ym/Xm cells of the map grid.

Frame: the (augmented) LiDAR frame. Both grids are ``BEVGrid``s in metres;
tensors are (B, C, Y, X) with row = y, column = x, row 0 at the smallest y.
Map logits/probabilities are (B, M, Ym, Xm) on the map grid, the layout of
the ``gt_masks_bev`` masks.

The two grids generally differ in extent and cell size (e.g. decoder
[-54, 54] m at 0.6 m -> 180 x 180; map [-50, 50] m at 0.5 m -> 200 x 200), so
the input is bilinearly sampled at the metric centre of every map cell
(``grid_sample``; outside the input extent the feature is 0) and never
resized by pixel count. A small conv classifier then predicts M logits.
"""
import warnings
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

from fuller.structures import MAP_CLASSES
from fuller.structures.frames import BEVGrid
from fuller.structures.geometry import as_bev_grid

GridLike = Union[BEVGrid, dict]


def metric_sampling_grid(src: BEVGrid, dst: BEVGrid) -> Tensor:
    """(1, Ym, Xm, 2) ``grid_sample`` coordinates (align_corners=False) of the
    ``dst`` cell centres inside the ``src`` extent; [..., 0] is x, [..., 1]
    is y, -1 / +1 are the outer edges of the first / last ``src`` cell."""
    ys, xs = dst.cell_centers()
    xs = torch.as_tensor(xs, dtype=torch.float64)
    ys = torch.as_tensor(ys, dtype=torch.float64)
    gx = 2 * (xs - src.x_range[0]) / (src.x_range[1] - src.x_range[0]) - 1
    gy = 2 * (ys - src.y_range[0]) / (src.y_range[1] - src.y_range[0]) - 1
    gy, gx = torch.meshgrid(gy, gx, indexing='ij')        # (Ym, Xm)
    return torch.stack([gx, gy], dim=-1)[None].float()


def _warn_if_not_covered(src: BEVGrid, dst: BEVGrid) -> None:
    """Map cells outside the input extent only ever see zero features."""
    if (dst.x_range[0] < src.x_range[0] or dst.x_range[1] > src.x_range[1]
            or dst.y_range[0] < src.y_range[0]
            or dst.y_range[1] > src.y_range[1]):
        warnings.warn(f'BEVMapSegHead: map_grid {dst} reaches beyond '
                      f'input_grid {src}; map cells outside the input '
                      'extent get zero features')


@MODELS.register_module()
class BEVMapSegHead(BaseModule):
    """Per-class binary BEV map segmentation.

    Args:
        in_channels: C of the shared BEV map.
        input_grid: grid of the input map, a ``BEVGrid`` or
            ``dict(x_range, y_range, cell_size)``.
        map_grid: grid of the output masks, e.g.
            ``dict(x_range=(-50, 50), y_range=(-50, 50), cell_size=0.5)``.
        classes: map class names (order of the mask channels).
        channels: width of the conv classifier (None: ``in_channels``).
        num_convs: 3x3 conv-BN-ReLU blocks before the 1x1 classifier.
        loss_type: ``'focal'`` (sigmoid focal) or ``'bce'``.
        focal_gamma, focal_alpha: focal-loss parameters; alpha None means
            no class-balance factor (as BEVFusion).
        loss_weight: scale of every per-class loss.
    """

    def __init__(self,
                 *,
                 in_channels: int,
                 input_grid: GridLike,
                 map_grid: GridLike,
                 classes: Sequence[str] = MAP_CLASSES,
                 channels: Optional[int] = None,
                 num_convs: int = 2,
                 loss_type: str = 'focal',
                 focal_gamma: float = 2.0,
                 focal_alpha: Optional[float] = None,
                 loss_weight: float = 1.0,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if loss_type not in ('focal', 'bce'):
            raise ValueError(f"BEVMapSegHead: loss_type must be 'focal' or "
                             f"'bce', got {loss_type!r}")
        if num_convs < 1:
            raise ValueError('BEVMapSegHead: num_convs must be >= 1')
        self.in_channels = in_channels
        self.input_grid = as_bev_grid(input_grid)
        self.map_grid = as_bev_grid(map_grid)
        self.classes = tuple(classes)
        self.loss_type = loss_type
        self.focal_gamma = focal_gamma
        self.focal_alpha = focal_alpha
        self.loss_weight = loss_weight
        channels = channels or in_channels
        blocks = [
            ConvModule(in_channels if i == 0 else channels, channels, 3,
                       padding=1, norm_cfg=dict(type='BN2d'))
            for i in range(num_convs)
        ]
        self.classifier = nn.Sequential(
            *blocks, nn.Conv2d(channels, len(self.classes), 1))
        _warn_if_not_covered(self.input_grid, self.map_grid)
        self.register_buffer(
            'sampling_grid',
            metric_sampling_grid(self.input_grid, self.map_grid),
            persistent=False)

    def check_input(self, feats_bev: Tensor) -> None:
        if feats_bev.dim() != 4 or feats_bev.shape[1] != self.in_channels \
                or tuple(feats_bev.shape[-2:]) != self.input_grid.shape:
            raise ValueError(
                f'BEVMapSegHead: expected a BEV map (B, {self.in_channels}, '
                f'Y, X) with (Y, X) = {self.input_grid.shape} from '
                f'input_grid {self.input_grid}, got '
                f'{tuple(feats_bev.shape)}. input_grid must be the grid '
                'of the decoder output.')

    def resample(self, feats_bev: Tensor) -> Tensor:
        """(B, C, Y, X) on the input grid -> (B, C, Ym, Xm) on the map
        grid, bilinear in metric coordinates."""
        self.check_input(feats_bev)
        grid = self.sampling_grid.to(feats_bev.dtype).expand(
            feats_bev.shape[0], -1, -1, -1)
        return F.grid_sample(feats_bev, grid, mode='bilinear',
                             padding_mode='zeros', align_corners=False)

    def forward(self, feats_bev: Tensor) -> Tensor:
        """(B, C, Y, X) -> (B, M, Ym, Xm) logits."""
        return self.classifier(self.resample(feats_bev))

    def loss(self, feats_bev: Tensor, batch_data_samples: List) -> Dict:
        """Per-class losses ``loss_<class>`` against each sample's
        ``gt_masks_bev`` (bool (M, Ym, Xm))."""
        logits = self(feats_bev)
        targets = torch.stack([
            self._gt_masks(sample) for sample in batch_data_samples
        ]).to(logits)
        return self.loss_by_feat(logits, targets)

    def loss_by_feat(self, logits: Tensor, targets: Tensor) -> Dict:
        """logits, targets (B, M, Ym, Xm) -> dict of per-class losses (mean
        over pixels)."""
        logits, targets = logits.float(), targets.float()  # AMP-safe
        per_pixel = F.binary_cross_entropy_with_logits(
            logits, targets, reduction='none')
        if self.loss_type == 'focal':
            prob = logits.sigmoid()
            p_t = prob * targets + (1 - prob) * (1 - targets)
            per_pixel = per_pixel * (1 - p_t)**self.focal_gamma
            if self.focal_alpha is not None:
                per_pixel = per_pixel * (self.focal_alpha * targets +
                                         (1 - self.focal_alpha) *
                                         (1 - targets))
        per_class = per_pixel.mean(dim=(0, 2, 3)) * self.loss_weight
        return {f'loss_{name}': per_class[i]
                for i, name in enumerate(self.classes)}

    def predict(self, feats_bev: Tensor,
                batch_data_samples: List) -> List[Tensor]:
        """-> per sample (M, Ym, Xm) probabilities."""
        return list(self(feats_bev).sigmoid())

    def _gt_masks(self, sample) -> Tensor:
        masks = getattr(sample, 'gt_masks_bev', None)
        expected = (len(self.classes), *self.map_grid.shape)
        if masks is None:
            raise KeyError('BEVMapSegHead: data sample has no gt_masks_bev '
                           '(add LoadBEVMapMasks to the pipeline)')
        if tuple(masks.shape) != expected:
            raise ValueError(
                f'BEVMapSegHead: gt_masks_bev has shape {tuple(masks.shape)}'
                f', expected {expected} from map_grid {self.map_grid}')
        return torch.as_tensor(masks)
