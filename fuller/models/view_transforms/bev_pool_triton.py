"""Fused depth x context BEV pooling in Triton (the GPU path of Lift-Splat).

Shape shorthand:
    N   camera images (batch x cameras, flattened)
    D   depth bins, H x W feature pixels (``fH x fW`` of the view transform)
    C   context channels
    B   batch size; Z, Y, X  BEV cells along z, y, x (lidar_aug frame)

The pure-torch path (``bev_pool.bev_pool`` on the materialised product, see
``LSSViewTransform.lift_splat``) builds the N x D x H x W x C frustum
features, sums them into cells with ``index_add`` and, in backward, gathers
an equally large gradient. Here the product is never stored:

forward   ``out[b, z, c, y, x] = sum over frustum points p = (n, d, h, w)
          in cell (b, z, y, x) of depth[n, d, h, w] * context[n, c, h, w]``
backward  ``grad_depth[n, d, h, w] = sum_c grad_out[cell(p), c] *
          context[n, c, h, w]`` and ``grad_context[n, c, h, w] =
          sum_d grad_out[cell(n, d, h, w), c] * depth[n, d, h, w]``

``cells`` holds the flat index of each frustum point's cell,
``((b*Z + z)*Y + y)*X + x`` (``bev_pool.flat_cell_index``); any value
outside ``[0, B*Z*Y*X)`` drops the point. The result is laid out
(B, Z, C, Y, X) (row = y, column = x), so ``flatten(1, 2)`` gives the
(B, Z*C, Y, X) map of ``lift_splat`` without a copy.

One Triton program owns BLOCK_P pixels of one image and BLOCK_C channels:
it loads their context once, walks the D depth bins and atomically adds the
products into a channels-last (cells, C) table (forward; the table is then
transposed to the output layout), or gathers the output gradient of each
point's cell from the transposed gradient (backward: grad_context
accumulates over D in registers and is stored once; grad_depth sums over the
program's channels, and is added atomically only when C spans several
channel blocks). Extra memory: the (cells, C) table, i.e. one more copy of
the output, instead of the N*D*H*W*C frustum features. Sums are float32
whatever the input dtype (float16/bfloat16 under AMP); the order of the
atomic additions is not fixed, so results agree with the torch path to
float32 rounding, not bit for bit.

``triton`` is imported on first use, not with this module, so that
``TRITON_INTERPRET=1`` (Triton's CPU interpreter, used by the tests) can be
set beforehand. On CPU tensors the kernels only run in that interpreter.
"""
import functools
import os
from typing import Sequence, Tuple

import torch
from torch import Tensor

__all__ = ['bev_pool_depth_context', 'triton_available']

_WHERE = 'fuller/models/view_transforms/bev_pool_triton.py'
BLOCK_P = 64  # pixels per program
BLOCK_C = 16  # channels per program


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """True when ``import triton`` succeeds."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401  (the kernels need it)
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _kernels():
    """The forward and backward Triton kernels (imported on first use)."""
    from . import _bev_pool_triton_kernels as kernels
    return kernels.fwd_kernel, kernels.bwd_kernel


def _hw_contiguous(x: Tensor) -> Tensor:
    """``x`` (N, K, H, W) whose (H, W) plane is one contiguous run."""
    if x.stride(3) == 1 and x.stride(2) == x.shape[3]:
        return x
    return x.contiguous()


def _check_inputs(depth: Tensor, context: Tensor, cells: Tensor,
                  batch_size: int, grid_shape: Sequence[int]) -> None:
    if depth.dim() != 4 or context.dim() != 4:
        raise ValueError(f'{_WHERE}: depth must be (N, D, H, W) and context '
                         f'(N, C, H, W), got {tuple(depth.shape)} and '
                         f'{tuple(context.shape)}')
    if (depth.shape[0], ) + depth.shape[2:] != (context.shape[0], ) + \
            context.shape[2:]:
        raise ValueError(f'{_WHERE}: depth {tuple(depth.shape)} and context '
                         f'{tuple(context.shape)} differ in N, H or W')
    if tuple(cells.shape) != tuple(depth.shape):
        raise ValueError(f'{_WHERE}: cells must be (N, D, H, W) = '
                         f'{tuple(depth.shape)}, got {tuple(cells.shape)}')
    if cells.dtype not in (torch.int32, torch.int64):
        raise TypeError(f'{_WHERE}: cells must be int32 or int64, got '
                        f'{cells.dtype}')
    if not (depth.dtype.is_floating_point and
            context.dtype.is_floating_point):
        raise TypeError(f'{_WHERE}: depth and context must be floating '
                        f'point, got {depth.dtype} and {context.dtype}')
    if len({depth.device, context.device, cells.device}) != 1:
        raise ValueError(f'{_WHERE}: depth, context and cells must be on one '
                         f'device, got {depth.device}, {context.device}, '
                         f'{cells.device}')
    if len(grid_shape) != 3 or min(grid_shape) < 1 or batch_size < 1:
        raise ValueError(f'{_WHERE}: need batch_size >= 1 and grid_shape = '
                         f'(Z, Y, X) of positive ints, got {batch_size}, '
                         f'{tuple(grid_shape)}')


def _grid(num_n: int, num_hw: int, num_c: int) -> Tuple[int, int]:
    return (num_n * -(-num_hw // BLOCK_P), -(-num_c // BLOCK_C))


class _DepthContextPool(torch.autograd.Function):

    @staticmethod
    def forward(ctx, depth: Tensor, context: Tensor, cells: Tensor,
                batch_size: int, grid_shape: Tuple[int, int, int]) -> Tensor:
        num_z, num_y, num_x = grid_shape
        num_n, num_d, feat_h, feat_w = depth.shape
        num_c = context.shape[1]
        depth, context = depth.contiguous(), _hw_contiguous(context)
        cells = cells.contiguous()
        num_cells = batch_size * num_z * num_y * num_x
        # channels-last cell table: one point's channels are adjacent
        table = torch.zeros(num_cells, num_c, dtype=torch.float32,
                            device=depth.device)
        num_hw = feat_h * feat_w
        if depth.numel() and num_c:
            fwd_kernel, _ = _kernels()
            fwd_kernel[_grid(num_n, num_hw, num_c)](
                depth, context, cells, table, num_d, num_c, num_hw,
                num_cells, context.stride(0), context.stride(1),
                BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C)
        ctx.save_for_backward(depth, context, cells)
        ctx.num_cells = num_cells
        out = table.view(batch_size, num_z, num_y, num_x, num_c)
        out = out.permute(0, 1, 4, 2, 3).contiguous()  # (B, Z, C, Y, X)
        return out.to(torch.result_type(depth, context))

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        depth, context, cells = ctx.saved_tensors
        need_depth, need_ctx = ctx.needs_input_grad[:2]
        num_n, num_d, feat_h, feat_w = depth.shape
        num_c, num_hw = context.shape[1], feat_h * feat_w
        grad_depth = grad_ctx = None
        if need_depth:
            grad_depth = torch.zeros(depth.shape, dtype=torch.float32,
                                     device=depth.device)
        if need_ctx:
            grad_ctx = torch.zeros(context.shape, dtype=torch.float32,
                                   device=depth.device)
        if (need_depth or need_ctx) and depth.numel() and num_c:
            _, bwd_kernel = _kernels()
            # (B, Z, C, Y, X) -> channels-last (cells, C), as the table
            grad_table = grad_out.permute(0, 1, 3, 4, 2).contiguous()
            dummy = depth  # never written when its gradient is not needed
            bwd_kernel[_grid(num_n, num_hw, num_c)](
                grad_table, depth, context, cells,
                grad_depth if need_depth else dummy,
                grad_ctx if need_ctx else dummy, num_d, num_c, num_hw,
                ctx.num_cells, context.stride(0), context.stride(1),
                BLOCK_P=BLOCK_P, BLOCK_C=BLOCK_C,
                NEED_DEPTH=bool(need_depth), NEED_CTX=bool(need_ctx),
                ONE_C_BLOCK=num_c <= BLOCK_C)
        if grad_depth is not None:
            grad_depth = grad_depth.to(depth.dtype)
        if grad_ctx is not None:
            grad_ctx = grad_ctx.to(context.dtype)
        return grad_depth, grad_ctx, None, None, None


def bev_pool_depth_context(depth: Tensor, context: Tensor, cells: Tensor,
                           batch_size: int,
                           grid_shape: Sequence[int]) -> Tensor:
    """Pool ``depth`` x ``context`` into BEV cells without materialising it.

    Args:
        depth: (N, D, H, W) depth distribution (any float dtype).
        context: (N, C, H, W) context features; each (H, W) plane must be
            contiguous or is copied (a channel slice of a contiguous map is
            used in place).
        cells: (N, D, H, W) int32/int64 flat cell index of every frustum
            point (``flat_cell_index``); values outside ``[0, B*Z*Y*X)`` drop
            the point.
        batch_size: B.
        grid_shape: (Z, Y, X).

    Returns:
        (B, Z, C, Y, X) per-cell sums, dtype ``result_type(depth, context)``
        (float32 accumulation). Differentiable with respect to ``depth`` and
        ``context``. CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``.
    """
    _check_inputs(depth, context, cells, batch_size, grid_shape)
    if not triton_available():
        raise RuntimeError(f'{_WHERE}: triton is not importable; use the '
                           "pure-torch pool (bev_pool_impl='torch')")
    if depth.device.type != 'cuda' and os.environ.get(
            'TRITON_INTERPRET') != '1':
        raise RuntimeError(f'{_WHERE}: the Triton pool runs on CUDA tensors '
                           f'(or on CPU with TRITON_INTERPRET=1 set before '
                           f"triton is imported), got {depth.device}; use "
                           f"bev_pool_impl='torch'")
    grid = tuple(int(s) for s in grid_shape)
    return _DepthContextPool.apply(depth, context, cells, int(batch_size),
                                   grid)
