"""Triton kernels of ``bev_pool_triton`` (see its docstring for the maths
and layouts). Imported on first use only: ``triton.jit`` reads
``TRITON_INTERPRET`` when these functions are decorated, i.e. when this
module is imported.

Both kernels work on a channels-last cell table (num_cells, C): a program
holds a (BLOCK_P pixels, BLOCK_C channels) tile whose channels are adjacent
in memory, so the atomic adds (forward) and gathers (backward) of one point
touch one contiguous run of the table.
"""
import triton
import triton.language as tl

__all__ = ['fwd_kernel', 'bwd_kernel']


@triton.jit
def fwd_kernel(depth_ptr, ctx_ptr, cell_ptr, table_ptr, num_d, num_c,
               num_hw, num_cells, ctx_stride_n, ctx_stride_c,
               BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """table[cells[n, d, p], c] += depth[n, d, p] * context[n, c, p]."""
    blocks_per_img = tl.cdiv(num_hw, BLOCK_P)
    pid = tl.program_id(0)
    n = (pid // blocks_per_img).to(tl.int64)
    hw = (pid % blocks_per_img) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    hw_ok = hw < num_hw
    c_ok = c < num_c
    ctx = tl.load(ctx_ptr + n * ctx_stride_n + c[None, :] * ctx_stride_c +
                  hw[:, None], mask=hw_ok[:, None] & c_ok[None, :],
                  other=0.).to(tl.float32)  # (BLOCK_P, BLOCK_C)
    for d in range(num_d):
        point = (n * num_d + d) * num_hw + hw
        dep = tl.load(depth_ptr + point, mask=hw_ok, other=0.).to(tl.float32)
        cell = tl.load(cell_ptr + point, mask=hw_ok, other=-1).to(tl.int64)
        kept = hw_ok & (cell >= 0) & (cell < num_cells)
        tl.atomic_add(table_ptr + cell[:, None] * num_c + c[None, :],
                      ctx * dep[:, None], mask=kept[:, None] & c_ok[None, :],
                      sem='relaxed')  # no ordering needed: a pure sum


@triton.jit
def bwd_kernel(grad_table_ptr, depth_ptr, ctx_ptr, cell_ptr, grad_depth_ptr,
               grad_ctx_ptr, num_d, num_c, num_hw, num_cells, ctx_stride_n,
               ctx_stride_c, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
               NEED_DEPTH: tl.constexpr, NEED_CTX: tl.constexpr,
               ONE_C_BLOCK: tl.constexpr):
    """grad_depth[n, d, p] = sum_c g[cell, c] * context[n, c, p] and
    grad_context[n, c, p] = sum_d g[cell(n, d, p), c] * depth[n, d, p]."""
    blocks_per_img = tl.cdiv(num_hw, BLOCK_P)
    pid = tl.program_id(0)
    n = (pid // blocks_per_img).to(tl.int64)
    hw = (pid % blocks_per_img) * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    hw_ok = hw < num_hw
    c_ok = c < num_c
    tile_ok = hw_ok[:, None] & c_ok[None, :]
    ctx = tl.load(ctx_ptr + n * ctx_stride_n + c[None, :] * ctx_stride_c +
                  hw[:, None], mask=tile_ok, other=0.).to(tl.float32)
    acc_ctx = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for d in range(num_d):
        point = (n * num_d + d) * num_hw + hw
        dep = tl.load(depth_ptr + point, mask=hw_ok, other=0.).to(tl.float32)
        cell = tl.load(cell_ptr + point, mask=hw_ok, other=-1).to(tl.int64)
        kept = hw_ok & (cell >= 0) & (cell < num_cells)
        grad = tl.load(grad_table_ptr + cell[:, None] * num_c + c[None, :],
                       mask=kept[:, None] & c_ok[None, :],
                       other=0.).to(tl.float32)  # (BLOCK_P, BLOCK_C)
        if NEED_CTX:
            acc_ctx += grad * dep[:, None]
        if NEED_DEPTH:
            part = tl.sum(grad * ctx, axis=1)  # (BLOCK_P, )
            if ONE_C_BLOCK:
                tl.store(grad_depth_ptr + point, part, mask=hw_ok)
            else:
                tl.atomic_add(grad_depth_ptr + point, part, mask=hw_ok,
                              sem='relaxed')
    if NEED_CTX:
        tl.store(grad_ctx_ptr + (n * num_c + c[None, :]) * num_hw +
                 hw[:, None], acc_ctx, mask=tile_ok)
