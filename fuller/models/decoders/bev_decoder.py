"""BEVDecoder: a registered 2D backbone + neck over the fused BEV map.

Shapes: B batch, C channels, Y/X BEV cells. Input (B, C_in, Y, X); output
the one shared BEV map (B, C_out, Y / s, X / s) every task head reads, where
s = backbone stride / neck upsampling (1 for BEVFusion's SECOND + SECONDFPN).
"""
from mmengine.model import BaseModule
from torch import Tensor

from mmdet3d.registry import MODELS


@MODELS.register_module()
class BEVDecoder(BaseModule):
    """Runs e.g. mmdet3d's ``SECOND`` then ``SECONDFPN`` and returns the
    neck's single output map (the last shared layer of the network).

    Args:
        backbone: config of a multi-scale 2D backbone (returns a tuple).
        neck: config of a neck that merges the scales into one map.
    """

    def __init__(self, *, backbone: dict, neck: dict, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck)

    def forward(self, bev: Tensor) -> Tensor:
        outs = self.neck(self.backbone(bev))
        if isinstance(outs, (list, tuple)):
            if len(outs) != 1:
                raise ValueError('BEVDecoder: the neck must return one map, '
                                 f'got {len(outs)}')
            outs = outs[0]
        return outs
