"""Image neck of the camera branch: backbone levels -> one stride-8 map.

Shape shorthand:
    B*N   images (batch x cameras, flattened by the caller)
    C_i   channels of backbone level i (finest level first)
    C     ``out_channels``
    H_i, W_i  spatial size of level i; the output has the size of level 0

Top-down fusion as in BEVFusion's camera neck: starting from the coarsest
level, upsample the running map to the next finer level, concatenate it with
that level's backbone features, then a 1x1 conv (to C) and a 3x3 conv.
Only the finest fused map is returned (the view transform consumes one map).
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

_WHERE = 'fuller/models/necks/generalized_lss_fpn.py'


@MODELS.register_module()
class GeneralizedLSSFPN(BaseModule):
    """Fuse image backbone levels top-down into one map.

    Args:
        in_channels: channels of the backbone levels given to ``forward``,
            finest first, e.g. ``(512, 1024, 2048)`` for ResNet-50 C3-C5 or
            ``(192, 384, 768)`` for Swin-T stages 2-4. At least two.
        out_channels: channels C of the fused map.
        in_strides: stride of each level w.r.t. the network input; only
            used to report ``out_stride`` (= ``in_strides[0]``).
        norm_cfg, act_cfg: mmcv configs of the conv blocks.
        upsample_mode: ``F.interpolate`` mode used to bring a coarser map to
            the next level's size ('bilinear' as BEVFusion, or 'nearest').
        init_cfg: mmengine init config.

    Input: list of L tensors (B*N, C_i, H_i, W_i); output: list with one
    tensor (B*N, C, H_0, W_0).
    """

    def __init__(self,
                 *,
                 in_channels: Sequence[int],
                 out_channels: int,
                 in_strides: Sequence[int] = (8, 16, 32),
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 upsample_mode: str = 'bilinear',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        in_channels = tuple(int(c) for c in in_channels)
        in_strides = tuple(int(s) for s in in_strides)
        if len(in_channels) < 2:
            raise ValueError(f'{_WHERE}: need at least 2 input levels, got '
                             f'in_channels={in_channels}')
        if len(in_strides) != len(in_channels):
            raise ValueError(f'{_WHERE}: in_strides {in_strides} must have '
                             f'one entry per level of in_channels '
                             f'{in_channels}')
        if list(in_strides) != sorted(in_strides):
            raise ValueError(f'{_WHERE}: levels must go from fine to coarse; '
                             f'got in_strides={in_strides}')
        if upsample_mode not in ('bilinear', 'nearest'):
            raise ValueError(f'{_WHERE}: upsample_mode must be bilinear or '
                             f'nearest, got {upsample_mode!r}')
        norm_cfg = dict(type='BN2d') if norm_cfg is None else norm_cfg
        act_cfg = dict(type='ReLU') if act_cfg is None else act_cfg
        self.in_channels = in_channels
        self.out_channels = int(out_channels)
        self.in_strides = in_strides
        self.upsample_mode = upsample_mode
        self.lateral_convs = nn.ModuleList()
        self.fpn_convs = nn.ModuleList()
        num_levels = len(in_channels)
        for i in range(num_levels - 1):
            from_above = (in_channels[i + 1] if i == num_levels - 2 else
                          self.out_channels)
            self.lateral_convs.append(
                ConvModule(in_channels[i] + from_above, self.out_channels, 1,
                           norm_cfg=norm_cfg, act_cfg=act_cfg))
            self.fpn_convs.append(
                ConvModule(self.out_channels, self.out_channels, 3,
                           padding=1, norm_cfg=norm_cfg, act_cfg=act_cfg))

    @property
    def out_stride(self) -> int:
        """Stride of the output map w.r.t. the network input."""
        return self.in_strides[0]

    def output_shape(self) -> Tuple[int, int]:
        """(channels, stride) of the single output map."""
        return self.out_channels, self.out_stride

    def _check(self, inputs: Sequence[Tensor]) -> None:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'{_WHERE}: expected {len(self.in_channels)} '
                             f'levels, got {len(inputs)}')
        got = tuple(x.shape[1] for x in inputs)
        if got != self.in_channels:
            raise ValueError(f'{_WHERE}: level channels {got} differ from '
                             f'in_channels {self.in_channels}')

    def forward(self, inputs: Sequence[Tensor]) -> List[Tensor]:
        self._check(inputs)
        fused = inputs[-1]
        for i in range(len(inputs) - 2, -1, -1):
            lateral = inputs[i]
            align = False if self.upsample_mode == 'bilinear' else None
            fused = F.interpolate(fused, size=lateral.shape[-2:],
                                  mode=self.upsample_mode,
                                  align_corners=align)
            fused = self.lateral_convs[i](torch.cat((lateral, fused), dim=1))
            fused = self.fpn_convs[i](fused)
        return [fused]
