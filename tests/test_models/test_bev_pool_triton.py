"""The fused Triton depth x context pool against the pure-torch path, run in
Triton's CPU interpreter.

``TRITON_INTERPRET=1`` must be set before triton is imported and would leak
into every later test of the session (the CUDA tests included), so the
Triton side runs once in a subprocess: this file executed as a script
computes the Triton outputs and gradients of fixed inputs and saves them;
the tests rebuild the same inputs here and compare with the pure-torch pool
(materialised product + ``bev_pool``) and with hand-computed values.
"""
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
VT = REPO / 'fuller' / 'models' / 'view_transforms'
TOL = dict(rtol=1e-5, atol=1e-5)  # float32, sums of up to ~10 products
_PKG = '_fuller_view_transforms_by_path'


def _load(name):
    """A view_transforms module without importing fuller (and mmdet3d): the
    folder is registered as a bare package so relative imports work."""
    if _PKG not in sys.modules:
        package = types.ModuleType(_PKG)
        package.__path__ = [str(VT)]
        sys.modules[_PKG] = package
    return importlib.import_module(f'{_PKG}.{name}')


def random_case(images=4, batch=2, depth_bins=5, hw=(3, 7), channels=20,
                grid=(2, 4, 5), seed=0):
    """depth (N, D, H, W) softmax-like, context (N, C, H, W), cells with
    about a third of the points dropped (negative or past the grid)."""
    gen = torch.Generator().manual_seed(seed)
    depth = torch.rand(images, depth_bins, *hw, generator=gen)
    context = torch.randn(images, channels, *hw, generator=gen)
    num_cells = batch * grid[0] * grid[1] * grid[2]
    cells = torch.randint(-num_cells // 4, num_cells + num_cells // 4,
                          depth.shape, generator=gen)
    grad_out = torch.randn(batch, grid[0], channels, grid[1], grid[2],
                           generator=gen)
    return dict(depth=depth, context=context, cells=cells, batch=batch,
                grid=grid, grad_out=grad_out)


def hand_case():
    """One image, D=2 bins, 1 x 2 pixels, C=2, grid (1, 1, 2), batch 1.

    Points (d, w) -> cell: (0, 0) -> 1, (1, 0) -> 1, (0, 1) -> 0,
    (1, 1) -> 2 (past the 2 cells: dropped).
    """
    depth = torch.tensor([[[[0.25, 0.5]], [[0.75, 0.125]]]])
    context = torch.tensor([[[[2., 4.]], [[-1., 8.]]]])
    cells = torch.tensor([[[[1, 0]], [[1, 2]]]], dtype=torch.int32)
    grad_out = torch.tensor([[[[[10., 20.]], [[30., 40.]]]]])  # (1,1,2,1,2)
    return dict(depth=depth, context=context, cells=cells, batch=1,
                grid=(1, 1, 2), grad_out=grad_out)


def cases():
    return dict(
        hand=hand_case(),
        multi_c_block=random_case(),  # C=20 > 16 channels per program
        one_c_block=random_case(images=3, batch=3, depth_bins=4,
                                hw=(5, 13), channels=6, grid=(1, 6, 3),
                                seed=1),  # 65 pixels: two pixel blocks
        int64_cells=dict(random_case(seed=2), cast_int64=True),
    )


def torch_pool(case):
    """The pure-torch path of ``lift_splat``: materialise, ``bev_pool``."""
    bev_pool = _load('bev_pool')
    depth = case['depth'].clone().requires_grad_(True)
    context = case['context'].clone().requires_grad_(True)
    num_z, num_y, num_x = case['grid']
    cells = case['cells'].long()
    num_cells = case['batch'] * num_z * num_y * num_x
    inside = (cells >= 0) & (cells < num_cells)
    cells = torch.where(inside, cells, num_cells)
    # flat cell -> (b, z, y, x), the coords bev_pool takes
    x = cells % num_x
    y = cells // num_x % num_y
    z = cells // (num_x * num_y) % num_z
    b = torch.where(inside, cells // (num_x * num_y * num_z), -1)
    coords = torch.stack((b, z, y, x), -1).reshape(-1, 4)
    feats = depth.unsqueeze(-1) * context.permute(0, 2, 3, 1).unsqueeze(1)
    bev = bev_pool.bev_pool(feats.reshape(-1, feats.shape[-1]), coords,
                            case['batch'], case['grid'])  # (B, C, Z, Y, X)
    bev = bev.transpose(1, 2)
    grad_depth, grad_context = torch.autograd.grad(bev, (depth, context),
                                                   case['grad_out'])
    return dict(out=bev.detach(), grad_depth=grad_depth,
                grad_context=grad_context)


def view_transform_case(impl):
    """LSSViewTransform (Z = 2, non-square grid, two cameras looking along
    +x and +y) forward + backward with ``bev_pool_impl=impl``."""
    from fuller.models.view_transforms import LSSViewTransform
    from fuller.testing.data_utils import LIDAR2CAM_FRONT, LIDAR2CAM_LEFT
    torch.manual_seed(0)
    vt = LSSViewTransform(
        in_channels=3, out_channels=5, image_size=(16, 32),
        feature_size=(2, 4), dbound=(1., 13., 2.), xbound=(-8., 8., 2.),
        ybound=(-6., 6., 2.), zbound=(-2., 4., 3.), downsample=1,
        bev_pool_impl=impl)
    cam2img = torch.eye(4)
    cam2img[:3, :3] = torch.tensor([[8., 0., 16.], [0., 8., 8.], [0, 0, 1]])
    lidar2cam = torch.tensor(np.stack([LIDAR2CAM_FRONT, LIDAR2CAM_LEFT]),
                             dtype=torch.float32).expand(2, 2, 4, 4)
    eye = torch.eye(4)
    feats = torch.randn(2, 2, 3, 2, 4, generator=torch.Generator(
    ).manual_seed(7), requires_grad=True)
    out = vt(feats, cam2img.expand(2, 2, 4, 4), lidar2cam,
             eye.expand(2, 2, 4, 4), eye.expand(2, 4, 4))
    out.square().sum().backward()
    return dict(out=out.detach(), grad_feats=feats.grad,
                grad_weight=vt.depth_net.weight.grad)


def triton_results_main(out_path):
    """Subprocess side: run the Triton pool on every case, save results."""
    assert os.environ.get('TRITON_INTERPRET') == '1'
    sys.path.insert(0, str(REPO))
    mod = _load('bev_pool_triton')
    results = {}
    for name, case in cases().items():
        depth = case['depth'].clone().requires_grad_(True)
        context = case['context'].clone().requires_grad_(True)
        cells = case['cells'].long() if case.get('cast_int64') else \
            case['cells'].int()
        out = mod.bev_pool_depth_context(depth, context, cells, case['batch'],
                                         case['grid'])
        grads = torch.autograd.grad(out, (depth, context), case['grad_out'])
        results[name] = dict(out=out.detach(), grad_depth=grads[0],
                             grad_context=grads[1])
    # a context that is a channel slice of one depth-net map, used in place
    case = random_case(seed=3)
    net_out = torch.cat((case['depth'], case['context']), 1)
    net_out.requires_grad_(True)
    num_d = case['depth'].shape[1]
    out = mod.bev_pool_depth_context(net_out[:, :num_d], net_out[:, num_d:],
                                     case['cells'], case['batch'],
                                     case['grid'])
    (grad, ) = torch.autograd.grad(out, net_out, case['grad_out'])
    results['sliced'] = dict(out=out.detach(), grad_net_out=grad)
    # float16 context, float32 depth (as under autocast): float32 result
    case = random_case(seed=4)
    out = mod.bev_pool_depth_context(case['depth'], case['context'].half(),
                                     case['cells'], case['batch'],
                                     case['grid'])
    results['half_context'] = dict(out=out)
    # only one input needs a gradient
    case = random_case(seed=5)
    context = case['context'].clone().requires_grad_(True)
    out = mod.bev_pool_depth_context(case['depth'], context, case['cells'],
                                     case['batch'], case['grid'])
    (grad, ) = torch.autograd.grad(out, context, case['grad_out'])
    results['context_grad_only'] = dict(grad_context=grad)
    # through LSSViewTransform (imports fuller, hence mmdet3d: last)
    results['view_transform'] = view_transform_case('triton')
    torch.save(results, out_path)


@pytest.fixture(scope='module')
def triton_results(tmp_path_factory):
    pytest.importorskip(
        'triton', reason='triton is not installed (requirements/tests.txt '
        'pins it for the CPU interpreter)')
    out = tmp_path_factory.mktemp('triton') / 'results.pt'
    env = dict(os.environ, TRITON_INTERPRET='1')
    proc = subprocess.run([sys.executable, __file__, str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return torch.load(out)


def test_hand_computed_values(triton_results):
    got = triton_results['hand']
    # cell 0 <- point (d0, w1): depth 0.5 x context (4, 8)
    # cell 1 <- (d0, w0) 0.25 x (2, -1) + (d1, w0) 0.75 x (2, -1)
    expected = torch.tensor([[[[[2., 2.]], [[4., -1.]]]]])  # (1,1,2,1,2)
    torch.testing.assert_close(got['out'], expected)
    # grad_out[c, cell]: c0 = (10, 20), c1 = (30, 40) for cells (0, 1)
    # grad_depth = sum_c grad_out[c, cell] * context[c]; dropped point: 0
    expected_depth = torch.tensor([[[[20 * 2 + 40 * -1, 10 * 4 + 30 * 8]],
                                    [[20 * 2 + 40 * -1, 0.]]]])
    torch.testing.assert_close(got['grad_depth'], expected_depth)
    # grad_context[c, w] = sum_d grad_out[c, cell(d, w)] * depth[d, w]
    expected_ctx = torch.tensor([[[[20 * (0.25 + 0.75), 10 * 0.5]],
                                  [[40 * (0.25 + 0.75), 30 * 0.5]]]])
    torch.testing.assert_close(got['grad_context'], expected_ctx)


@pytest.mark.parametrize('name', ['hand', 'multi_c_block', 'one_c_block',
                                  'int64_cells'])
def test_forward_and_gradients_match_torch_pool(triton_results, name):
    case = cases()[name]
    ref = torch_pool(case)
    got = triton_results[name]
    assert got['out'].shape == (case['batch'], case['grid'][0],
                                case['context'].shape[1]) + case['grid'][1:]
    for key in ('out', 'grad_depth', 'grad_context'):
        torch.testing.assert_close(got[key], ref[key], **TOL, msg=key)
    assert ref['out'].abs().sum() > 0 and ref['grad_depth'].abs().sum() > 0


def test_channel_slice_context_and_dtypes(triton_results):
    case = random_case(seed=3)
    ref = torch_pool(case)
    got = triton_results['sliced']
    torch.testing.assert_close(got['out'], ref['out'], **TOL)
    grad = torch.cat((ref['grad_depth'], ref['grad_context']), 1)
    torch.testing.assert_close(got['grad_net_out'], grad, **TOL)

    case = random_case(seed=4)
    half = dict(case, context=case['context'].half().float())
    got = triton_results['half_context']['out']
    assert got.dtype == torch.float32  # result_type(float32, float16)
    torch.testing.assert_close(got, torch_pool(half)['out'], **TOL)

    case = random_case(seed=5)
    torch.testing.assert_close(
        triton_results['context_grad_only']['grad_context'],
        torch_pool(case)['grad_context'], **TOL)


def test_view_transform_triton_equals_torch(triton_results):
    got = triton_results['view_transform']
    ref = view_transform_case('torch')
    assert got['out'].shape == (2, 5, 6, 8)  # (B, C, Y, X)
    assert ref['out'].abs().sum() > 0
    for key in ('out', 'grad_feats', 'grad_weight'):
        torch.testing.assert_close(got[key], ref[key], rtol=1e-4, atol=1e-5,
                                   msg=key)


def test_view_transform_impl_choice_and_cells():
    from fuller.models.view_transforms import LSSViewTransform
    from fuller.models.view_transforms.bev_pool import flat_cell_index
    kwargs = dict(in_channels=3, out_channels=5, image_size=(16, 32),
                  feature_size=(2, 4), dbound=(1., 13., 2.),
                  xbound=(-8., 8., 2.), ybound=(-6., 6., 2.),
                  zbound=(-2., 4., 3.))
    with pytest.raises(ValueError, match='bev_pool_impl'):
        LSSViewTransform(**kwargs, bev_pool_impl='cuda')
    vt = LSSViewTransform(**kwargs)  # default 'auto'
    assert vt.bev_pool_impl == 'auto'
    assert not vt._use_triton(torch.device('cpu'))  # CPU numerics unchanged
    assert LSSViewTransform(**kwargs, bev_pool_impl='triton')._use_triton(
        torch.device('cpu'))
    # frustum_cells == flat_cell_index(voxelize(.)), on points that hit
    # every kind of cell: inside, and outside along x, y, z
    gen = torch.Generator().manual_seed(0)
    geom = (torch.rand(2, 3, 4, 2, 5, 3, generator=gen) - 0.5) * \
        torch.tensor([20., 16., 8.])
    cells = vt.frustum_cells(geom)
    assert cells.shape == (6, 4, 2, 5) and cells.dtype == torch.int32
    expected = flat_cell_index(vt.voxelize(geom), 2, vt.grid_shape)
    assert torch.equal(cells.flatten().long(), expected)
    num_cells = 2 * 2 * 6 * 8
    assert 0.2 < (expected < num_cells).float().mean() < 0.8


COMPILE_SCRIPT = r"""
import json, re, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
sys.path.insert(0, sys.argv[1])
import test_bev_pool_triton as t
kern = t._load('_bev_pool_triton_kernels')
scalars = dict.fromkeys(['num_d', 'num_c', 'num_hw', 'num_cells',
                         'ctx_stride_n', 'ctx_stride_c'], 'i32')
fwd = dict(depth_ptr='*fp32', ctx_ptr='*fp16', cell_ptr='*i32',
           table_ptr='*fp32', **scalars, BLOCK_P='constexpr',
           BLOCK_C='constexpr')
bwd = dict(grad_table_ptr='*fp32', depth_ptr='*fp32', ctx_ptr='*bf16',
           cell_ptr='*i64', grad_depth_ptr='*fp32', grad_ctx_ptr='*fp32',
           **scalars, BLOCK_P='constexpr', BLOCK_C='constexpr',
           NEED_DEPTH='constexpr', NEED_CTX='constexpr',
           ONE_C_BLOCK='constexpr')
blocks = dict(BLOCK_P=64, BLOCK_C=16)
out = {}
for name, fn, sig, const in (
        ('fwd', kern.fwd_kernel, fwd, blocks),
        ('bwd_one_c_block', kern.bwd_kernel, bwd,
         dict(blocks, NEED_DEPTH=True, NEED_CTX=True, ONE_C_BLOCK=True)),
        ('bwd_c_blocks', kern.bwd_kernel, bwd,
         dict(blocks, NEED_DEPTH=True, NEED_CTX=True, ONE_C_BLOCK=False))):
    k = triton.compile(ASTSource(fn, sig, constexprs=const),
                       target=GPUTarget('cuda', 90, 32))
    ptx = k.asm['ptx']
    out[name] = dict(cubin=len(k.asm['cubin']),
                     red=sorted(set(re.findall(r'red\.global[\w.]+', ptx))))
print(json.dumps(out))
"""


def test_kernels_compile_for_sm90(tmp_path):
    """The real Triton compiler (not the interpreter) lowers the kernels to
    an sm_90 cubin; needs no GPU (ptxas ships in the triton wheel)."""
    pytest.importorskip('triton', reason='triton is not installed')
    env = dict(os.environ, TRITON_CACHE_DIR=str(tmp_path),
               TRITON_DEFAULT_FP_FUSION='1')
    env.pop('TRITON_INTERPRET', None)
    proc = subprocess.run(
        [sys.executable, '-c', COMPILE_SCRIPT, str(Path(__file__).parent)],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(v['cubin'] > 0 for v in got.values())
    # forward: unordered float32 atomic adds into the table
    assert got['fwd']['red'] == ['red.global.gpu.relaxed.add.f32']
    # backward: gathers only, atomics only when C spans several blocks
    assert got['bwd_one_c_block']['red'] == []
    assert got['bwd_c_blocks']['red'] == ['red.global.gpu.relaxed.add.f32']


def test_bad_input_raises():
    mod = _load('bev_pool_triton')
    depth, context = torch.zeros(2, 3, 4, 5), torch.zeros(2, 6, 4, 5)
    cells = torch.zeros(2, 3, 4, 5, dtype=torch.int32)
    with pytest.raises(ValueError, match='cells must be'):
        mod.bev_pool_depth_context(depth, context, cells[:, :2], 1,
                                   (1, 2, 2))
    with pytest.raises(ValueError, match='differ in N, H or W'):
        mod.bev_pool_depth_context(depth, context[:, :, :3], cells, 1,
                                   (1, 2, 2))
    with pytest.raises(TypeError, match='int32 or int64'):
        mod.bev_pool_depth_context(depth, context, cells.float(), 1,
                                   (1, 2, 2))


if __name__ == '__main__':
    triton_results_main(sys.argv[1])
