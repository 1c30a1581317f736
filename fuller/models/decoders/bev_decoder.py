"""BEVDecoder: a registered 2D backbone + neck over the fused BEV map.

Shapes: B batch, C channels, Y/X BEV cells. Input (B, C_in, Y, X); output
the one shared BEV map (B, C_out, Y / s, X / s) every task head reads, where
s = backbone stride / neck upsampling (1 for BEVFusion's SECOND + SECONDFPN).
"""
from mmengine.model import BaseModule
from torch import Tensor

from mmdet3d.registry import MODELS

from ...structures import BEVGrid


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
        self.in_channels = backbone['in_channels']
        out = neck['out_channels']
        self.out_channels = sum(out) if isinstance(out, (list, tuple)) else out
        # first backbone level's stride over its neck upsampling (SECOND/SECONDFPN keys)
        self.output_stride = (backbone.get('layer_strides', [1])[0] /
                              neck.get('upsample_strides', [1])[0])

    def output_grid(self, input_grid: BEVGrid) -> BEVGrid:
        """The shared map's grid for an input map on ``input_grid``."""
        (dx, dy), s = input_grid.cell_size, self.output_stride
        return BEVGrid(input_grid.x_range, input_grid.y_range, (dx * s, dy * s))

    def forward(self, bev: Tensor) -> Tensor:
        outs = self.neck(self.backbone(bev))
        if isinstance(outs, (list, tuple)):
            if len(outs) != 1:
                raise ValueError('BEVDecoder: the neck must return one map, '
                                 f'got {len(outs)}')
            outs = outs[0]
        return outs
