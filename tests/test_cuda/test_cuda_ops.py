"""CUDA checks of the pooling and sparse-conv ops: bev_pool on CUDA equals
the CPU result, the fused Triton pool equals the pure-torch pool on CUDA
(alone and inside LSSViewTransform), and the spconv algorithm switch
restores spconv's CUDA default on a GPU.

Run with ``pytest -m cuda`` on a GPU machine (tools/gpu_check.sh); without
a GPU every test here is collected and skipped with the reason.
"""
import math

import pytest
import torch

from fuller.models.view_transforms.bev_pool import bev_pool, flat_cell_index
from fuller.testing import cuda_marks, exact_float32

pytestmark = cuda_marks()


@pytest.fixture(autouse=True)
def no_tf32():
    """No TF32 in matmuls/convs: CPU and CUDA compare at float32."""
    with exact_float32():
        yield


def random_points(num_points=300, channels=3, batch_size=2,
                  grid_shape=(2, 5, 7), seed=0):
    """(P, C) features and (P, 4) cells, about a third outside the grid."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(num_points, channels, generator=gen)
    upper = torch.tensor((batch_size, ) + tuple(grid_shape))
    coords = (torch.rand(num_points, 4, generator=gen) * 1.25 * upper -
              0.1 * upper).floor().long()
    return feats, coords


def test_bev_pool_cuda_matches_cpu():
    feats, coords = random_points()
    feats.requires_grad_(True)
    out = bev_pool(feats, coords, 2, (2, 5, 7))
    feats_cuda = feats.detach().cuda().requires_grad_(True)
    out_cuda = bev_pool(feats_cuda, coords.cuda(), 2, (2, 5, 7))
    torch.testing.assert_close(out_cuda.cpu(), out.detach())
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    out_cuda.backward(grad_out.cuda())
    torch.testing.assert_close(feats_cuda.grad.cpu(), feats.grad)


def torch_depth_context_pool(depth, context, cells, batch, grid):
    """The pure-torch path: materialise depth x context, ``bev_pool``."""
    num_z, num_y, num_x = grid
    num_cells = batch * num_z * num_y * num_x
    cells = cells.long()
    inside = (cells >= 0) & (cells < num_cells)
    coords = torch.stack((torch.where(inside, cells // (num_z * num_y *
                                                        num_x), -1),
                          cells // (num_y * num_x) % num_z,
                          cells // num_x % num_y, cells % num_x), -1)
    feats = depth.unsqueeze(-1) * context.permute(0, 2, 3, 1).unsqueeze(1)
    bev = bev_pool(feats.reshape(-1, feats.shape[-1]), coords.reshape(-1, 4),
                   batch, grid)
    return bev.transpose(1, 2)  # (B, Z, C, Y, X)


@pytest.mark.parametrize('channels,grid', [(80, (1, 90, 90)),
                                           (12, (3, 20, 30))])
def test_triton_pool_matches_torch_pool_on_cuda(channels, grid):
    from fuller.models.view_transforms import bev_pool_depth_context
    gen = torch.Generator().manual_seed(0)
    images, batch, num_d, hw = 12, 2, 40, (16, 44)
    depth = torch.rand(images, num_d, *hw, generator=gen).softmax(1).cuda()
    context = torch.randn(images, channels, *hw, generator=gen).cuda()
    num_cells = batch * math.prod(grid)
    # near cells crowded, as in a real frustum: a few hundred points a cell
    cells = (torch.rand(depth.shape, generator=gen) ** 2 * 1.3 * num_cells
             ).long().cuda()
    grad_out = torch.randn(batch, grid[0], channels, *grid[1:],
                           generator=gen).cuda()
    results = []
    for pool in (bev_pool_depth_context, torch_depth_context_pool):
        d = depth.clone().requires_grad_(True)
        c = context.clone().requires_grad_(True)
        out = pool(d, c, cells.int(), batch, grid)
        out.backward(grad_out)
        results.append((out.detach(), d.grad, c.grad))
    # both sum with atomics in no fixed order; the crowded cells hold
    # ~2000 points: float32 rounding of such sums is ~1e-5 relative
    for got, ref, name in zip(results[0], results[1],
                              ('out', 'grad_depth', 'grad_context')):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4, msg=name)
    assert results[1][0].abs().sum() > 0


def build_lss(bev_pool_impl):
    """A BEVFusion-sized camera branch on a smaller grid (Z = 2)."""
    from fuller.models.view_transforms import LSSViewTransform
    torch.manual_seed(0)
    return LSSViewTransform(
        in_channels=16, out_channels=24, image_size=(128, 352),
        feature_size=(16, 44), dbound=(1., 60., 0.5),
        xbound=(-54., 54., 0.6), ybound=(-54., 54., 0.6),
        zbound=(-10., 10., 10.), downsample=2,
        bev_pool_impl=bev_pool_impl).cuda()


def ring_cameras(batch=2, cams=6):
    """cam2img, lidar2cam, img_aug (identity), lidar_aug (identity) of a
    ring of ``cams`` cameras 1.6 m up, 128 x 352 images, f = 160 px."""
    cam2img = torch.eye(4)
    cam2img[:3, :3] = torch.tensor([[160., 0, 176], [0, 160., 64],
                                    [0, 0, 1]])
    mats = []
    for k in range(cams):
        yaw = 2 * math.pi * k / cams
        c, s = math.cos(yaw), math.sin(yaw)
        # camera axes (x right, y down, z forward) in the LiDAR frame
        rot = torch.tensor([[s, -c, 0.], [0., 0., -1.], [c, s, 0.]])
        lidar2cam = torch.eye(4)
        lidar2cam[:3, :3] = rot
        lidar2cam[:3, 3] = -rot @ torch.tensor([0., 0., 1.6])
        mats.append(lidar2cam)
    lidar2cam = torch.stack(mats).expand(batch, -1, -1, -1)
    cam2img = cam2img.expand(batch, cams, 4, 4)
    eye = torch.eye(4).expand(batch, cams, 4, 4)
    return [m.contiguous().cuda() for m in
            (cam2img, lidar2cam, eye, torch.eye(4).expand(batch, 4, 4))]


def test_view_transform_auto_uses_triton_and_matches_torch():
    from fuller.models.view_transforms import triton_available
    assert triton_available(), 'torch on CUDA ships triton; it must import'
    auto, reference = build_lss('auto'), build_lss('torch')
    reference.load_state_dict(auto.state_dict())
    assert auto._use_triton(torch.device('cuda'))
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(2, 6, 16, 16, 44, generator=gen).cuda()
    cams = ring_cameras()
    outs, grads = [], []
    for vt in (auto, reference):
        x = feats.clone().requires_grad_(True)
        out = vt(x, *cams)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append((x.grad, vt.depth_net.weight.grad))
    assert outs[0].shape == (2, 24, 90, 90)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-4)
    for got, ref in zip(grads[0], grads[1]):
        torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-5)
    # frustum_cells is voxelize + flat_cell_index
    geom = auto.get_geometry(*cams)
    cells = flat_cell_index(auto.voxelize(geom), 2, auto.grid_shape)
    torch.testing.assert_close(auto.frustum_cells(geom).long().flatten(),
                               cells)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_view_transform_triton_under_autocast(dtype):
    vt = build_lss('triton')
    ref = build_lss('torch')
    ref.load_state_dict(vt.state_dict())
    feats = torch.randn(2, 6, 16, 16, 44, device='cuda')
    cams = ring_cameras()
    with torch.autocast('cuda', dtype=dtype):
        got = vt(feats, *cams)
        want = ref(feats, *cams)
    assert got.dtype == want.dtype
    assert torch.isfinite(got).all()
    # both run their convs in ``dtype``: compare as a relative norm
    err = (got.float() - want.float()).norm() / want.float().norm()
    assert err < 1e-2, f'relative difference {err:.2e}'


def test_spconv_switch_restores_cuda_default_on_gpu():
    from spconv.core import ConvAlgo
    from spconv.pytorch.conv import SparseConvolution

    from fuller.compat import set_spconv_algo
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet3d')
    sparse_shape = [41, 24, 40]
    model = MODELS.build(dict(
        type='SparseEncoder', in_channels=4, sparse_shape=sparse_shape,
        order=('conv', 'norm', 'act'), base_channels=8, output_channels=16,
        encoder_channels=((8, ), (8, 16), (16, 16), (16, 16)),
        encoder_paddings=((0, ), (1, 1), (1, 1), ((1, 0, 0), 1, 1)),
        block_type='basicblock')).eval()

    def algos():
        return {m.algo for m in model.modules()
                if isinstance(m, SparseConvolution)}

    default = algos()
    assert default == {ConvAlgo.MaskImplicitGemm}  # spconv's CUDA default
    gen = torch.Generator().manual_seed(0)
    coors = torch.unique(torch.stack([
        torch.randint(0, 2, (200, ), generator=gen)] + [
        torch.randint(0, s, (200, ), generator=gen) for s in sparse_shape],
        1), dim=0).int()
    feats = torch.randn(len(coors), 4, generator=gen)
    assert set_spconv_algo(model, 'cpu') == 13
    with torch.no_grad():
        out_cpu = model(feats, coors, 2)
    model.cuda()
    assert set_spconv_algo(model) == 13  # device read from the parameters
    assert algos() == default
    with torch.no_grad():
        out_cuda = model(feats.cuda(), coors.cuda(), 2)
    torch.testing.assert_close(out_cuda.cpu(), out_cpu, rtol=1e-4, atol=1e-4)
