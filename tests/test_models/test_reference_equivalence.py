"""fuller's LiDAR-only detection path computes what mmdet3d's
projects/BEVFusion computes, where fuller reuses mmdet3d modules.

Reference side: the module configs of
``projects/BEVFusion/configs/bevfusion_lidar-cam_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-3d.py``
(voxelize_cfg, pts_middle_encoder, pts_backbone, pts_neck, the TransFusionHead
convs) on a small non-square grid, run the way ``bevfusion.py`` runs them:
hard voxelisation to (x, y, z) indices, the mean of each voxel's points
(``voxelize_reduce``), ``BEVFusionSparseEncoder``, SECOND, SECONDFPN. The
reference's compiled voxel op assigns points to voxels like mmcv's hard
voxelisation but writes indices as (x, y, z), so mmcv's op is used with its
(z, y, x) columns reversed; ``BEVFusionSparseEncoder`` is restated below
(``XYZSparseEncoder``) as mmdet3d's ``SparseEncoder`` on that order. The
LiDAR-only reference config uses SyncBN where this one uses BN: the same
parameters and, on one process, the same function.

fuller side: ``MultiTaskBEVFusion`` from
``configs/bevfusion/bevfusion_lidar_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det.py``
on the same grid, its weights loaded from the reference weights through
``convert_state_dict`` and ``load_checkpoint_partial``. Same points in; the
tensors out agree after the BEV transpose (reference maps are (B, C, X, Y),
fuller's (B, C, Y, X)) and the class reordering.
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmcv.ops import Voxelization
from fuller.utils.config_utils import load_config
from mmengine.registry import init_default_scope
from torch import nn

import fuller  # noqa: F401
from fuller.compat import set_spconv_algo
from fuller.utils.bevfusion_checkpoint import (REFERENCE_CLASSES,
                                               class_permutation,
                                               convert_state_dict)
from fuller.utils.checkpoint_loading import load_checkpoint_partial
from mmdet3d.models.layers import make_sparse_convmodule
from mmdet3d.models.middle_encoders import SparseEncoder
from mmdet3d.models.middle_encoders.sparse_encoder import SparseConvTensor
from mmdet3d.registry import MODELS
from mmdet3d.structures import Det3DDataSample
from fuller.testing import REPO_ROOT

OURS_CFG = REPO_ROOT / 'configs' / 'bevfusion' / \
    'bevfusion_lidar_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det.py'
# a small non-square grid: 48 x 32 x 41 voxels of 0.3 x 0.3 x 0.2 m -> 6 x 4 BEV cells
PCR = [-7.2, -4.8, -5.0, 7.2, 4.8, 3.0]
VOXEL = [0.3, 0.3, 0.2]
GRID_XYZ = [48, 32, 41]  # reference sparse_shape order (x, y, z); z keeps mmdet3d's +1
NUM_CLASSES = 10

# reference configs (values from the config named in the module docstring)
REF_VOXELIZE = dict(max_num_points=10, point_cloud_range=PCR, voxel_size=VOXEL,
                    max_voxels=[120000, 160000])  # voxelize_reduce=True
REF_SPARSE = dict(
    in_channels=5, sparse_shape=GRID_XYZ, order=('conv', 'norm', 'act'),
    norm_cfg=dict(type='BN1d', eps=0.001, momentum=0.01),
    encoder_channels=((16, 16, 32), (32, 32, 64), (64, 64, 128), (128, 128)),
    encoder_paddings=((0, 0, 1), (0, 0, 1), (0, 0, (1, 1, 0)), (0, 0)),
    block_type='basicblock')
REF_BACKBONE = dict(type='SECOND', in_channels=256, out_channels=[128, 256],
                    layer_nums=[5, 5], layer_strides=[1, 2],
                    norm_cfg=dict(type='BN', eps=0.001, momentum=0.01),
                    conv_cfg=dict(type='Conv2d', bias=False))
REF_NECK = dict(type='SECONDFPN', in_channels=[128, 256], out_channels=[256, 256],
                upsample_strides=[1, 2], norm_cfg=dict(type='BN', eps=0.001, momentum=0.01),
                upsample_cfg=dict(type='deconv', bias=False), use_conv_for_no_stride=True)
REF_HEAD = dict(in_channels=512, hidden_channel=128, num_classes=NUM_CLASSES,
                common_heads=dict(center=[2, 2], height=[1, 2], dim=[3, 2], rot=[2, 2],
                                  vel=[2, 2]), num_heatmap_convs=2)


# tiny tensors: one intra-op thread is faster than several on a loaded CPU
pytestmark = pytest.mark.usefixtures('one_thread')


class XYZSparseEncoder(SparseEncoder):
    """``BEVFusionSparseEncoder`` (projects/BEVFusion/bevfusion/sparse_encoder.py)
    restated: mmdet3d's ``SparseEncoder`` over (b, x, y, z) voxel indices,
    its last conv (1, 1, 3) with stride (1, 1, 2) so that z shrinks, and the
    dense (B, C, X, Y, Z) output folded to (B, C*Z, X, Y), c-major."""

    def __init__(self, **cfg):
        super().__init__(**cfg)
        self.conv_out = make_sparse_convmodule(
            cfg['encoder_channels'][-1][-1], self.output_channels, kernel_size=(1, 1, 3),
            stride=(1, 1, 2), norm_cfg=cfg['norm_cfg'], padding=0,
            indice_key='spconv_down2', conv_type='SparseConv3d')

    def forward(self, feats, coors_bxyz, batch_size):
        x = self.conv_input(SparseConvTensor(feats, coors_bxyz.int(),
                                             self.sparse_shape, batch_size))
        for layer in self.encoder_layers:
            x = layer(x)
        dense = self.conv_out(x).dense()  # (B, C, X, Y, Z)
        b, c, nx, ny, nz = dense.shape
        return dense.permute(0, 1, 4, 2, 3).reshape(b, c * nz, nx, ny)


class ReferenceLidarDet(nn.Module):
    """The reference's LiDAR-only detector parts, under its attribute names
    (bevfusion.py, transfusion_head.py)."""

    def __init__(self):
        super().__init__()
        h, nc = REF_HEAD['hidden_channel'], REF_HEAD['num_classes']
        self.pts_middle_encoder = XYZSparseEncoder(**REF_SPARSE)
        self.pts_backbone = MODELS.build(REF_BACKBONE)
        self.pts_neck = MODELS.build(REF_NECK)
        self.bbox_head = nn.Module()
        head = self.bbox_head
        # build_conv_layer(..., bias='auto') -> nn.Conv2d(bias='auto'): a bias
        head.shared_conv = nn.Conv2d(REF_HEAD['in_channels'], h, 3, padding=1, bias=True)
        head.heatmap_head = nn.Sequential(
            ConvModule(h, h, 3, padding=1, bias='auto', conv_cfg=dict(type='Conv2d'),
                       norm_cfg=dict(type='BN2d')),
            nn.Conv2d(h, nc, 3, padding=1, bias=True))
        head.class_encoding = nn.Conv1d(nc, h, 1)
        heads = dict(REF_HEAD['common_heads'], heatmap=(nc, REF_HEAD['num_heatmap_convs']))
        head.prediction_heads = nn.ModuleList([MODELS.build(dict(
            type='SeparateHead', in_channels=h, heads=heads, conv_cfg=dict(type='Conv1d'),
            norm_cfg=dict(type='BN1d'), bias='auto'))])

    def lidar_bev(self, points):
        layer = Voxelization(**REF_VOXELIZE).eval()
        feats, coords = [], []
        for k, pts in enumerate(points):
            voxels, coors_zyx, num = layer(pts)
            coords.append(F.pad(coors_zyx.flip(1), (1, 0), value=k))  # (b, x, y, z)
            feats.append(voxels.sum(1) / num.type_as(voxels).view(-1, 1))
        return self.pts_middle_encoder(torch.cat(feats), torch.cat(coords), len(points))

    def shared_bev(self, lidar_bev):
        return self.pts_neck(self.pts_backbone(lidar_bev))[0]

    def dense_heatmap(self, shared):
        return self.bbox_head.heatmap_head(self.bbox_head.shared_conv(shared))


def randomise_(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.dtype.is_floating_point:
                if name.endswith('running_var'):
                    t.copy_(torch.rand(t.shape, generator=g) + 0.5)
                else:
                    t.copy_(torch.randn(t.shape, generator=g) * 0.2)


def ours_cfg():
    # the small grid is set in one place, the config's geometry; every module follows
    cfg = load_config(str(OURS_CFG), {'geometry.point_cloud_range': PCR,
                                      'geometry.voxel_size': VOXEL}, sync=True)
    model = copy.deepcopy(cfg.model)
    assert model.pts_middle_encoder.sparse_shape == GRID_XYZ[::-1]
    assert model.data_preprocessor.voxel_layer.point_cloud_range == PCR
    assert model.det_head.input_grid == dict(x_range=[-7.2, 7.2], y_range=[-4.8, 4.8],
                                             cell_size=[2.4, 2.4])  # 0.3 m x stride 8
    return model


def points(seed, n=800):
    g = torch.Generator().manual_seed(seed)
    lo, hi = torch.tensor(PCR[:3]), torch.tensor(PCR[3:])
    xyz = lo + (hi - lo) * torch.rand(n, 3, generator=g)
    return torch.cat([xyz, torch.rand(n, 2, generator=g)], 1).double()


@pytest.fixture(scope='module')
def pair():
    init_default_scope('mmdet3d')
    torch.manual_seed(0)
    ref = ReferenceLidarDet()
    randomise_(ref, seed=1)
    set_spconv_algo(ref, 'cpu')
    ours = MODELS.build(ours_cfg())
    converted, _ = convert_state_dict(ref.state_dict())
    report = load_checkpoint_partial(ours, dict(state_dict=converted))
    # float64 on both sides: the sum order inside sparse convs differs
    # (permuted kernel axes), so float32 agrees only to ~1e-5
    return ref.double().eval(), ours.double().eval(), report


@pytest.fixture(scope='module')
def outputs(pair):
    ref, ours, _ = pair
    pts = [points(0), points(1)]
    data = dict(inputs=dict(points=pts), data_samples=[Det3DDataSample() for _ in pts])
    with torch.no_grad():
        inputs = ours.data_preprocessor(data, training=False)['inputs']
        ref_bev = ref.lidar_bev(pts)
        ref_shared = ref.shared_bev(ref_bev)
        bev = ours.extract_lidar_bev(inputs)
        shared = ours.decoder(bev)
        return dict(
            ref_bev=ref_bev, ref_shared=ref_shared, ref_heat=ref.dense_heatmap(ref_shared),
            bev=bev, shared=shared, heat=ours.heads['det'](shared)['dense_heatmap'])


def test_only_the_decoder_layers_stay_unloaded(pair):
    _, ours, report = pair
    assert report.unexpected == []
    assert report.missing and all(k.startswith('heads.det.decoder.') for k in report.missing)
    assert not any(k.startswith(('pts_middle_encoder', 'decoder.')) for k in report.missing)


def test_sparse_encoder_output_matches(outputs):
    ref_bev, bev = outputs['ref_bev'], outputs['bev']
    assert ref_bev.shape == (2, 256, 6, 4) and bev.shape == (2, 256, 4, 6)
    assert bev.abs().sum() > 0
    assert bev.dtype == torch.float64
    torch.testing.assert_close(bev, ref_bev.transpose(2, 3))


def test_shared_bev_matches(outputs):
    shared, ref_shared = outputs['shared'], outputs['ref_shared']
    assert shared.shape == (2, 512, 4, 6)
    torch.testing.assert_close(shared, ref_shared.transpose(2, 3))


def test_dense_heatmap_matches_with_classes_by_name(outputs):
    ours_classes = ours_cfg_classes()
    perm = class_permutation(REFERENCE_CLASSES, ours_classes)
    ref_heat = outputs['ref_heat'].transpose(2, 3)[:, perm]
    torch.testing.assert_close(outputs['heat'], ref_heat)
    ped = ours_classes.index('pedestrian')
    torch.testing.assert_close(outputs['heat'][:, ped],
                               outputs['ref_heat'][:, REFERENCE_CLASSES.index('pedestrian')].mT)


def ours_cfg_classes():
    """The class order fuller's config trains with (the converter's default
    is mmdet3d's NuScenesDataset order: they must agree)."""
    return list(load_config(str(OURS_CFG)).class_names)


def test_query_branches_match(pair):
    """Per-query parts that are the same modules: the SeparateHead outputs
    and the class embedding, for the same query features and classes."""
    ref, ours, _ = pair
    head = ours.heads['det']
    perm = class_permutation(REFERENCE_CLASSES, ours_cfg_classes())
    g = torch.Generator().manual_seed(3)
    query = torch.randn(2, 128, 7, generator=g, dtype=torch.float64)  # (B, H, P)
    ref_labels = torch.randint(0, NUM_CLASSES, (2, 7), generator=g)
    our_labels = torch.tensor(perm).argsort()[ref_labels]  # same class names
    with torch.no_grad():
        ref_out = ref.bbox_head.prediction_heads[0](query)
        our_out = head.pred_heads[0](query)
        for name in ('center', 'height', 'dim', 'rot', 'vel'):
            torch.testing.assert_close(our_out[name], ref_out[name])
        torch.testing.assert_close(our_out['cls'], ref_out['heatmap'][:, perm])
        ref_emb = ref.bbox_head.class_encoding(
            F.one_hot(ref_labels, NUM_CLASSES).permute(0, 2, 1).double())
        our_emb = head.class_embedding(F.one_hot(our_labels, NUM_CLASSES).double())
        torch.testing.assert_close(our_emb, ref_emb.transpose(1, 2))
