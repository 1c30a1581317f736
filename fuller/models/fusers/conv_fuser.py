"""ConvFuser: concatenate per-modality BEV maps and mix them with a conv.

Shapes: B batch, C_m channels of modality m, Y/X BEV cells.
Inputs are BEV maps on the same grid, (B, C_m, Y, X) each, in the
(augmented) LiDAR frame; output (B, C_out, Y, X).
"""
from typing import List, Sequence

import torch
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor

from mmdet3d.registry import MODELS


@MODELS.register_module()
class ConvFuser(BaseModule):
    """``conv3x3-BN-ReLU(concat(bev_1, ..., bev_M))``.

    Args:
        in_channels: channels of each input BEV map, in input order
            (fuller passes camera first, then LiDAR).
        out_channels: channels of the fused map.
    """

    def __init__(self, *, in_channels: Sequence[int], out_channels: int,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = list(in_channels)
        self.out_channels = out_channels
        self.conv = ConvModule(
            sum(self.in_channels), out_channels, 3, padding=1, bias=False,
            norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01),
            act_cfg=dict(type='ReLU'))

    def forward(self, bev_feats: List[Tensor]) -> Tensor:
        if len(bev_feats) != len(self.in_channels):
            raise ValueError(f'ConvFuser expects {len(self.in_channels)} BEV '
                             f'maps, got {len(bev_feats)}')
        shapes = {tuple(f.shape[-2:]) for f in bev_feats}
        if len(shapes) != 1:
            raise ValueError(
                f'ConvFuser: modality BEV maps are on different grids '
                f'{[tuple(f.shape) for f in bev_feats]}; check that the view '
                'transform (xbound/ybound, downsample) and the LiDAR encoder '
                '(point_cloud_range, voxel_size, sparse_shape) give one grid')
        for f, c in zip(bev_feats, self.in_channels):
            if f.shape[1] != c:
                raise ValueError(f'ConvFuser: got a {f.shape[1]}-channel map '
                                 f'where in_channels says {c}')
        return self.conv(torch.cat(bev_feats, dim=1))
