"""Lift-Splat view transform: camera feature maps -> one BEV map.

Shape shorthand:
    B   batch, N cameras, C channels (``out_channels``), C_in input channels
    D   depth bins, fH x fW feature pixels, H x W network input pixels
    Z, Y, X  BEV cells of the pooling grid (Y', X' after ``downsample``)

Frames (see ``fuller.structures.frames``):
    img_aug    pixels of the augmented network input (u right, v down;
               pixel centres at integer (u, v), so pixel (row, col) covers
               [col - 1/2, col + 1/2) x [row - 1/2, row + 1/2))
    img        pixels of the original camera image
    cam        camera frame (x right, y down, z forward)
    lidar      LiDAR frame of the keyframe
    lidar_aug  augmented LiDAR frame, in which the BEV grid is defined

Matrices (homogeneous 4x4, column vectors): ``img_aug_matrix`` = img2img_aug
(its third row must keep the depth, i.e. be (0, 0, 1, 0)), ``cam2img``,
``lidar2cam``, ``lidar_aug_matrix`` = lidar2lidar_aug.

A frustum node is (u, v, d) in img_aug: feature pixel (i, j) sits at the centre
of the input pixels it covers, u = (j + 1/2) W / fW - 1/2,
v = (i + 1/2) H / fH - 1/2, and depth bin k at d = d_min + k * d_step (as
``torch.arange(*dbound)``).
"""
import math
from typing import List, Sequence, Tuple

import torch
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

from fuller.structures.frames import BEVGrid
from .bev_pool import bev_pool
from .bev_pool_triton import bev_pool_depth_context, triton_available

_WHERE = 'fuller/models/view_transforms/lss_view_transform.py'
BEV_POOL_IMPLS = ('auto', 'torch', 'triton')


def _conv_bn_relu(c_in: int, c_out: int, kernel: int,
                  stride: int = 1) -> List[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


def _pair(value: Sequence, name: str) -> Tuple[int, int]:
    if len(value) != 2 or min(value) <= 0:
        raise ValueError(f'{_WHERE}: {name} must be two positive numbers, '
                         f'got {value}')
    return tuple(int(v) for v in value)


def _bound(value: Sequence[float], name: str) -> Tuple[float, float, float]:
    if len(value) != 3 or value[2] <= 0 or value[1] <= value[0]:
        raise ValueError(f'{_WHERE}: {name} must be (min, max, step) with '
                         f'max > min and step > 0, got {value}')
    return tuple(float(v) for v in value)


class BaseLSSViewTransform(BaseModule):
    """Geometry, lifting and splatting shared by the LSS variants.

    Subclasses build ``self.depth_net`` and implement ``forward``.

    ``bev_pool_impl`` picks the splatting: 'torch' materialises the
    (B*N, D, fH, fW, C) frustum features and sums them with ``bev_pool``
    (any device; the reference); 'triton' pools depth x context without
    materialising them (``bev_pool_triton``; CUDA, or CPU under
    ``TRITON_INTERPRET=1``); 'auto' uses 'triton' for CUDA inputs when triton
    is importable and 'torch' otherwise.

    Args (keyword-only):
        in_channels: C_in of the image features.
        out_channels: C of the BEV map (also the context channels).
        image_size: (H, W) of the network input.
        feature_size: (fH, fW) of the image features.
        dbound: (d_min, d_max, d_step) in metres; D depth bins.
        xbound, ybound, zbound: (min, max, cell) of the pooling grid in the
            augmented LiDAR frame; X, Y, Z cells.
        downsample: stride of the conv block after pooling (1: none).
        bev_pool_impl: 'auto', 'torch' or 'triton' (above).
    """

    uses_points = False  # True: forward also takes the LiDAR points (DepthLSS)

    def __init__(self, *, in_channels: int, out_channels: int,
                 image_size: Sequence[int], feature_size: Sequence[int],
                 dbound: Sequence[float], xbound: Sequence[float],
                 ybound: Sequence[float], zbound: Sequence[float],
                 downsample: int = 1, bev_pool_impl: str = 'auto') -> None:
        super().__init__()
        if bev_pool_impl not in BEV_POOL_IMPLS:
            raise ValueError(f'{_WHERE}: bev_pool_impl must be one of '
                             f'{BEV_POOL_IMPLS}, got {bev_pool_impl!r}')
        self.bev_pool_impl = bev_pool_impl
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.image_size = _pair(image_size, 'image_size')
        self.feature_size = _pair(feature_size, 'feature_size')
        self.dbound = _bound(dbound, 'dbound')
        if self.dbound[0] <= 0:
            raise ValueError(f'{_WHERE}: dbound must start at a positive '
                             f'depth, got {dbound}')
        xbound, ybound = _bound(xbound, 'xbound'), _bound(ybound, 'ybound')
        self.zbound = _bound(zbound, 'zbound')
        self.bev_grid = BEVGrid(xbound[:2], ybound[:2], (xbound[2], ybound[2]))
        num_z = (self.zbound[1] - self.zbound[0]) / self.zbound[2]
        if abs(num_z - round(num_z)) > 1e-6:
            raise ValueError(f'{_WHERE}: zbound {zbound} is not a whole '
                             f'number of cells')
        self.grid_shape = (int(round(num_z)), ) + self.bev_grid.shape
        self.downsample = int(downsample)
        if (self.downsample < 1 or self.bev_grid.nx % self.downsample
                or self.bev_grid.ny % self.downsample):
            raise ValueError(f'{_WHERE}: downsample={downsample} must be a '
                             f'positive divisor of the grid shape (Y, X) = '
                             f'{self.bev_grid.shape}')
        self.register_buffer('frustum', self._make_frustum(), persistent=False)
        self.register_buffer('z_range', torch.tensor(self.zbound),
                             persistent=False)
        self.bev_out = self._make_bev_out()

    @property
    def depth_bins(self) -> int:
        return self.frustum.shape[0]

    @property
    def output_grid(self) -> BEVGrid:
        """The BEV grid of the output map (cells ``downsample`` x larger)."""
        (dx, dy), g = self.bev_grid.cell_size, self.bev_grid
        return BEVGrid(g.x_range, g.y_range,
                       (dx * self.downsample, dy * self.downsample))

    def _make_frustum(self) -> Tensor:
        """(D, fH, fW, 3) frustum nodes (u, v, d) in img_aug pixels.

        Pixel centres sit at integer coordinates (the ``cam2img`` / OpenCV
        convention, see ``fuller.structures.frames``): feature pixel j of
        stride s covers image pixels [j*s, (j+1)*s) and is centred at
        ``(j + 0.5) * s - 0.5``."""
        d_min, d_max, d_step = self.dbound
        num_d = int(math.ceil((d_max - d_min) / d_step - 1e-6))
        (img_h, img_w), (feat_h, feat_w) = self.image_size, self.feature_size
        d = d_min + d_step * torch.arange(num_d, dtype=torch.float64)
        u = (torch.arange(feat_w, dtype=torch.float64) + 0.5) * img_w / feat_w - 0.5
        v = (torch.arange(feat_h, dtype=torch.float64) + 0.5) * img_h / feat_h - 0.5
        u, v, d = torch.broadcast_tensors(u.view(1, 1, -1), v.view(1, -1, 1),
                                          d.view(-1, 1, 1))
        return torch.stack((u, v, d), dim=-1).float()

    def _make_bev_out(self) -> nn.Module:
        """(B, Z*C, Y, X) pooled map -> (B, C, Y', X')."""
        c_out = self.out_channels
        c_pool = self.grid_shape[0] * c_out
        if self.downsample > 1:
            return nn.Sequential(
                *_conv_bn_relu(c_pool, c_out, 3),
                *_conv_bn_relu(c_out, c_out, 3, stride=self.downsample),
                *_conv_bn_relu(c_out, c_out, 3))
        if c_pool != c_out:
            return nn.Sequential(*_conv_bn_relu(c_pool, c_out, 1))
        return nn.Identity()

    def _check_inputs(self, img_feats: Tensor, cam2img: Tensor,
                      lidar2cam: Tensor, img_aug_matrix: Tensor,
                      lidar_aug_matrix: Tensor) -> None:
        want = (self.in_channels, ) + self.feature_size
        if img_feats.dim() != 5 or tuple(img_feats.shape[2:]) != want:
            raise ValueError(f'{_WHERE}: img_feats must be (B, N, {want[0]}, '
                             f'{want[1]}, {want[2]}), got '
                             f'{tuple(img_feats.shape)}')
        batch_cams = tuple(img_feats.shape[:2]) + (4, 4)
        for name, mat in (('cam2img', cam2img), ('lidar2cam', lidar2cam),
                          ('img_aug_matrix', img_aug_matrix)):
            if tuple(mat.shape) != batch_cams:
                raise ValueError(f'{_WHERE}: {name} must be {batch_cams}, got '
                                 f'{tuple(mat.shape)}')
        if tuple(lidar_aug_matrix.shape) != (img_feats.shape[0], 4, 4):
            raise ValueError(f'{_WHERE}: lidar_aug_matrix must be '
                             f'({img_feats.shape[0]}, 4, 4), got '
                             f'{tuple(lidar_aug_matrix.shape)}')

    def get_geometry(self, cam2img: Tensor, lidar2cam: Tensor,
                     img_aug_matrix: Tensor,
                     lidar_aug_matrix: Tensor) -> Tensor:
        """Frustum nodes in the augmented LiDAR frame.

        Args:
            cam2img, lidar2cam, img_aug_matrix: (B, N, 4, 4).
            lidar_aug_matrix: (B, 4, 4).

        Returns:
            (B, N, D, fH, fW, 3) float32 (x, y, z) in lidar_aug.
        """
        nodes = self.frustum.reshape(-1, 3).float()
        nodes = torch.cat((nodes, torch.ones_like(nodes[:, :1])), dim=1)
        # Matrix products in float64; points in float32 outside autocast
        # (u * d exceeds the float16 range).
        img_aug2img = torch.linalg.inv(img_aug_matrix.double()).float()
        img2lidar_aug = (lidar_aug_matrix.double().unsqueeze(1) @
                         torch.linalg.inv(lidar2cam.double()) @
                         torch.linalg.inv(cam2img.double())).float()
        with torch.autocast(nodes.device.type, enabled=False):
            pts_img = torch.einsum('bnij,pj->bnpi', img_aug2img, nodes)
            depth = pts_img[..., 2:3]
            pts_img = torch.cat((pts_img[..., :2] * depth, depth,
                                 torch.ones_like(depth)), dim=-1)
            pts = torch.einsum('bnij,bnpj->bnpi', img2lidar_aug, pts_img)
        batch, cams = cam2img.shape[:2]
        return pts[..., :3].reshape(batch, cams, *self.frustum.shape)

    def voxelize(self, pts_lidar_aug: Tensor) -> Tensor:
        """(B, ..., 3) points -> (P, 4) integer cells (b, iz, iy, ix)."""
        batch = pts_lidar_aug.shape[0]
        pts = pts_lidar_aug.reshape(batch, -1, 3)
        iy, ix = self.bev_grid.cell_index(pts[..., 0], pts[..., 1])
        iz = ((pts[..., 2] - self.z_range[0]) / self.z_range[2]).floor().long()
        ib = torch.arange(batch, device=pts.device).view(-1, 1).expand_as(iz)
        return torch.stack((ib, iz, iy, ix), dim=-1).reshape(-1, 4)

    def frustum_cells(self, geom_lidar_aug: Tensor) -> Tensor:
        """(B, N, D, fH, fW, 3) points -> (B*N, D, fH, fW) flat cells.

        The cell of each point is the one ``voxelize`` gives, flattened as
        ``bev_pool.flat_cell_index`` does (``((b*Z + z)*Y + y)*X + x``, and
        ``B*Z*Y*X`` for a point outside the grid), without building the
        (P, 4) table. int32 when the cell count allows.
        """
        batch = geom_lidar_aug.shape[0]
        num_z, num_y, num_x = self.grid_shape
        num_cells = batch * num_z * num_y * num_x
        iy, ix = self.bev_grid.cell_index(geom_lidar_aug[..., 0],
                                          geom_lidar_aug[..., 1])
        iz = ((geom_lidar_aug[..., 2] - self.z_range[0]) /
              self.z_range[2]).floor().long()
        inside = ((ix >= 0) & (ix < num_x) & (iy >= 0) & (iy < num_y) &
                  (iz >= 0) & (iz < num_z))
        ib = torch.arange(batch, device=iz.device).view(-1, 1, 1, 1, 1)
        flat = ((ib * num_z + iz) * num_y + iy) * num_x + ix
        flat = torch.where(inside, flat, flat.new_full((), num_cells))
        if num_cells < 2**31 - 1:
            flat = flat.int()
        return flat.flatten(0, 1)

    def _use_triton(self, device: torch.device) -> bool:
        if self.bev_pool_impl == 'auto':
            return device.type == 'cuda' and triton_available()
        return self.bev_pool_impl == 'triton'

    def lift_splat(self, depth_net_out: Tensor,
                   geom_lidar_aug: Tensor) -> Tensor:
        """Depth-net output -> pooled BEV map before ``bev_out``.

        Args:
            depth_net_out: (B*N, D + C, fH, fW): D depth logits, C context.
            geom_lidar_aug: (B, N, D, fH, fW, 3) from ``get_geometry``.

        Returns:
            (B, Z*C, Y, X), channels z-major (all C of z-bin 0 first).
        """
        num_d = self.depth_bins
        depth = depth_net_out[:, :num_d].softmax(dim=1)  # (B*N, D, fH, fW)
        context = depth_net_out[:, num_d:]  # (B*N, C, fH, fW)
        if self._use_triton(depth_net_out.device):
            bev = bev_pool_depth_context(
                depth, context, self.frustum_cells(geom_lidar_aug),
                geom_lidar_aug.shape[0], self.grid_shape)  # (B, Z, C, Y, X)
            return bev.flatten(1, 2)
        frustum_feats = depth.unsqueeze(-1) * context.permute(
            0, 2, 3, 1).unsqueeze(1)  # (B*N, D, fH, fW, C)
        batch = geom_lidar_aug.shape[0]
        bev = bev_pool(frustum_feats.reshape(-1, self.out_channels),
                       self.voxelize(geom_lidar_aug), batch, self.grid_shape)
        return bev.transpose(1, 2).flatten(1, 2)  # (B, Z*C, Y, X)


@MODELS.register_module()
class LSSViewTransform(BaseLSSViewTransform):
    """Lift-Splat-Shoot camera-to-BEV transform (BEVFusion ``LSSTransform``).

    A 1x1 conv predicts D depth logits (softmax over D) and C context
    channels per feature pixel; their outer product is splatted into the BEV
    grid and, for ``downsample`` > 1, a strided conv block shrinks the map.

    Args (keyword-only):
        in_channels: C_in of the image features.
        out_channels: C of the BEV map (also the context channels).
        image_size: (H, W) of the network input.
        feature_size: (fH, fW) of the image features.
        dbound: (d_min, d_max, d_step) in metres; D = ceil((max-min)/step).
        xbound, ybound, zbound: (min, max, cell) of the pooling grid in the
            augmented LiDAR frame; X, Y, Z cells (see ``bev_grid``).
        downsample: stride of the conv block after pooling (1: none).
        bev_pool_impl: 'auto', 'torch' or 'triton' (see
            ``BaseLSSViewTransform``).

    Forward returns (B, C, Y', X') on ``output_grid``.
    """

    def __init__(self, *, in_channels: int, out_channels: int,
                 image_size: Sequence[int], feature_size: Sequence[int],
                 dbound: Sequence[float], xbound: Sequence[float],
                 ybound: Sequence[float], zbound: Sequence[float],
                 downsample: int = 1, bev_pool_impl: str = 'auto') -> None:
        super().__init__(in_channels=in_channels, out_channels=out_channels,
                         image_size=image_size, feature_size=feature_size,
                         dbound=dbound, xbound=xbound, ybound=ybound,
                         zbound=zbound, downsample=downsample,
                         bev_pool_impl=bev_pool_impl)
        self.depth_net = nn.Conv2d(self.in_channels,
                                   self.depth_bins + self.out_channels, 1)

    def forward(self, img_feats: Tensor, cam2img: Tensor, lidar2cam: Tensor,
                img_aug_matrix: Tensor, lidar_aug_matrix: Tensor) -> Tensor:
        """img_feats (B, N, C_in, fH, fW); matrices as ``get_geometry``."""
        self._check_inputs(img_feats, cam2img, lidar2cam, img_aug_matrix,
                           lidar_aug_matrix)
        geom = self.get_geometry(cam2img, lidar2cam, img_aug_matrix,
                                 lidar_aug_matrix)
        depth_net_out = self.depth_net(img_feats.flatten(0, 1))
        return self.bev_out(self.lift_splat(depth_net_out, geom))


@MODELS.register_module()
class DepthLSSViewTransform(BaseLSSViewTransform):
    """LSS with LiDAR depth as an extra input of the depth net (BEVFusion
    ``DepthLSSTransform``).

    The points are projected into every camera as a sparse depth map
    (B*N, 1, H, W) in metres (nearest point per pixel, 0 where none), encoded
    by convs of total stride H / fH, concatenated with the image features and
    passed through a conv depth net to D + C channels.

    Args (keyword-only):
        in_channels, out_channels, image_size, feature_size, dbound, xbound,
            ybound, zbound, downsample, bev_pool_impl: as in
            ``LSSViewTransform``; the feature stride H / fH must equal
            W / fW and be a multiple of 4.

    Forward returns (B, C, Y', X') on ``output_grid``, as
    ``LSSViewTransform``'s.
    """

    depth_enc_channels = (8, 32, 64)
    uses_points = True  # forward takes the LiDAR points (see the detector)

    def __init__(self, *, in_channels: int, out_channels: int,
                 image_size: Sequence[int], feature_size: Sequence[int],
                 dbound: Sequence[float], xbound: Sequence[float],
                 ybound: Sequence[float], zbound: Sequence[float],
                 downsample: int = 1, bev_pool_impl: str = 'auto') -> None:
        super().__init__(in_channels=in_channels, out_channels=out_channels,
                         image_size=image_size, feature_size=feature_size,
                         dbound=dbound, xbound=xbound, ybound=ybound,
                         zbound=zbound, downsample=downsample,
                         bev_pool_impl=bev_pool_impl)
        (img_h, img_w), (feat_h, feat_w) = self.image_size, self.feature_size
        stride = img_h // feat_h
        if (stride * feat_h != img_h or stride * feat_w != img_w
                or stride % 4):
            raise ValueError(f'{_WHERE}: DepthLSSViewTransform needs one '
                             f'feature stride H/fH == W/fW that is a multiple'
                             f' of 4; got image_size {self.image_size}, '
                             f'feature_size {self.feature_size}')
        c1, c2, c3 = self.depth_enc_channels
        self.depth_encoder = nn.Sequential(
            *_conv_bn_relu(1, c1, 1), *_conv_bn_relu(c1, c2, 5, stride=4),
            *_conv_bn_relu(c2, c3, 5, stride=stride // 4))
        c_in = self.in_channels
        self.depth_net = nn.Sequential(
            *_conv_bn_relu(c_in + c3, c_in, 3), *_conv_bn_relu(c_in, c_in, 3),
            nn.Conv2d(c_in, self.depth_bins + self.out_channels, 1))

    @torch.no_grad()
    def points_to_depth_map(self, points: Sequence[Tensor], cam2img: Tensor,
                            lidar2cam: Tensor, img_aug_matrix: Tensor,
                            lidar_aug_matrix: Tensor) -> Tensor:
        """Sparse depth maps of the augmented-LiDAR ``points``.

        Args:
            points: B tensors (P_b, >=3), x, y, z in lidar_aug first.
            cam2img, lidar2cam, img_aug_matrix: (B, N, 4, 4).
            lidar_aug_matrix: (B, 4, 4).

        Returns:
            (B*N, 1, H, W): camera depth (m) of the nearest point whose
            projection falls in each img_aug pixel, 0 where none does.
        """
        img_h, img_w = self.image_size
        cams = cam2img.shape[1]
        aug2lidar = torch.linalg.inv(lidar_aug_matrix.double()).unsqueeze(1)
        lidar_aug2img = cam2img.double() @ lidar2cam.double() @ aug2lidar
        maps = []
        for b, pts in enumerate(points):
            pts = pts[:, :3].double()
            pts = torch.cat((pts, torch.ones_like(pts[:, :1])), dim=1)
            proj = torch.einsum('nij,pj->npi', lidar_aug2img[b], pts)
            depth = proj[..., 2]
            valid = depth > 1e-3
            pixel = proj[..., :2] / depth.clamp(min=1e-3).unsqueeze(-1)
            proj = torch.cat((pixel, proj[..., 2:]), dim=-1)
            proj = torch.einsum('nij,npj->npi', img_aug_matrix[b].double(),
                                proj)
            col = (proj[..., 0] + 0.5).floor().long()  # pixel centres at integers
            row = (proj[..., 1] + 0.5).floor().long()
            valid &= (col >= 0) & (col < img_w) & (row >= 0) & (row < img_h)
            cam_idx = torch.arange(cams, device=col.device).view(-1, 1)
            flat = (cam_idx * img_h + row) * img_w + col
            flat = torch.where(valid, flat, flat.new_full((), cams * img_h *
                                                          img_w))
            nearest = depth.new_full((cams * img_h * img_w + 1, ), math.inf)
            nearest = nearest.scatter_reduce(0, flat.reshape(-1),
                                             depth.reshape(-1), 'amin')
            nearest = torch.where(nearest.isinf(), 0.0, nearest)[:-1]
            maps.append(nearest.view(cams, 1, img_h, img_w))
        return torch.cat(maps).float()

    def forward(self, img_feats: Tensor, points: Sequence[Tensor],
                cam2img: Tensor, lidar2cam: Tensor, img_aug_matrix: Tensor,
                lidar_aug_matrix: Tensor) -> Tensor:
        """img_feats (B, N, C_in, fH, fW); points: B tensors (P_b, >=3) in
        lidar_aug; matrices as ``get_geometry``."""
        self._check_inputs(img_feats, cam2img, lidar2cam, img_aug_matrix,
                           lidar_aug_matrix)
        if len(points) != img_feats.shape[0]:
            raise ValueError(f'{_WHERE}: got {len(points)} point clouds for '
                             f'a batch of {img_feats.shape[0]}')
        depth_map = self.points_to_depth_map(points, cam2img, lidar2cam,
                                             img_aug_matrix, lidar_aug_matrix)
        depth_feats = self.depth_encoder(depth_map.to(img_feats.dtype))
        depth_net_out = self.depth_net(
            torch.cat((img_feats.flatten(0, 1), depth_feats), dim=1))
        geom = self.get_geometry(cam2img, lidar2cam, img_aug_matrix,
                                 lidar_aug_matrix)
        return self.bev_out(self.lift_splat(depth_net_out, geom))
