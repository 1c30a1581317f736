"""Autograd Functions that calibrate gradients inside ONE backward pass.

Shape shorthand: K tasks, P shared tensors (usually 1: the shared BEV map
(B, C, Y, X)), M modalities (usually 2: camera BEV and LiDAR BEV, each
(B, C_m, Y, X)).

``TaskGradCalibration`` (inter-gradient calibration)
    forward: the P shared tensors -> K * P views, task-major (task k gets
    outputs ``k * P .. k * P + P - 1``). Each task head consumes only its own
    views, so autograd keeps the K gradients apart even though the data is the
    same tensor. Views are returned, not copies: no extra memory, but a head
    must not modify its input in place (autograd raises a clear error).
    backward: receives the K * P gradients together (None where a head did
    not use its view: treated as zero), asks the calibrator for the weights
    alpha (K,) -- Gram in float32, all-reduced under DDP, solved on the host --
    and returns sum_k alpha_k g_k for every shared tensor. Task heads'
    parameters never pass through here, so they keep their own gradients.
``ModalityGradCalibration`` (intra-gradient calibration)
    forward: identity on the M modality features (views). backward: receives
    the M gradients, asks the calibrator for one scale per modality (from the
    squared norms, all-reduced under DDP) and returns the rescaled gradients:
    directions are kept, magnitudes brought to one common value.

Both Functions keep the incoming dtype (fp16/bf16 results are accumulated in
float32 and clamped to the dtype's finite range, so no inf is produced by the
calibration itself). Tasks or modalities with weight 0 are skipped rather than
multiplied, so a NaN gradient that was excluded cannot leak through 0 * NaN.
"""
from typing import List, Optional, Sequence

import torch
from torch import Tensor

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _finish(out: Tensor, dtype: torch.dtype) -> Tensor:
    """Cast an accumulator back to ``dtype``, clamping to its finite range."""
    if out.dtype == dtype:
        return out
    limit = torch.finfo(dtype).max
    return out.clamp_(-limit, limit).to(dtype)


def combine_grads(grads: Sequence[Optional[Tensor]], alpha: Sequence[float],
                  shape: torch.Size, dtype: torch.dtype,
                  device: torch.device) -> Tensor:
    """sum_k alpha_k g_k, skipping None gradients and zero weights."""
    acc_dtype = torch.float32 if dtype in _LOW_PRECISION else dtype
    out = None
    for grad, weight in zip(grads, alpha):
        if grad is None or weight == 0.0:
            continue
        term = grad.to(acc_dtype)
        out = term * weight if out is None else out.add_(term, alpha=weight)
    if out is None:
        return torch.zeros(shape, dtype=dtype, device=device)
    return _finish(out, dtype)


def scale_grad(grad: Optional[Tensor], scale: float) -> Optional[Tensor]:
    """grad * scale; scale 0 gives exact zeros (drops NaN), 1 is a no-op."""
    if grad is None or scale == 1.0:
        return grad
    if scale == 0.0:
        return torch.zeros_like(grad)
    acc_dtype = torch.float32 if grad.dtype in _LOW_PRECISION else grad.dtype
    return _finish(grad.to(acc_dtype) * scale, grad.dtype)


class TaskGradCalibration(torch.autograd.Function):
    """Fan P shared tensors out to K tasks; combine the K gradients."""

    @staticmethod
    def forward(ctx, calibrator, spec, num_tasks: int, *shared: Tensor):
        """``spec`` is opaque here: handed back to the calibrator."""
        ctx.set_materialize_grads(False)
        ctx.calibrator, ctx.spec, ctx.num_tasks = calibrator, spec, num_tasks
        ctx.meta = [(t.shape, t.dtype, t.device) for t in shared]
        return tuple(t.view_as(t) for _ in range(num_tasks) for t in shared)

    @staticmethod
    def backward(ctx, *grads: Optional[Tensor]):
        num_tasks, num_shared = ctx.num_tasks, len(ctx.meta)
        per_task: List[List[Optional[Tensor]]] = [
            list(grads[k * num_shared:(k + 1) * num_shared])
            for k in range(num_tasks)]
        alpha = ctx.calibrator._task_backward(ctx.spec, per_task,
                                              ctx.meta[0][2])
        combined = []
        for p, (shape, dtype, device) in enumerate(ctx.meta):
            combined.append(combine_grads(
                [task[p] for task in per_task], alpha, shape, dtype, device))
        return (None, None, None, *combined)


class ModalityGradCalibration(torch.autograd.Function):
    """Identity on M modality features; rescale their gradients in backward."""

    @staticmethod
    def forward(ctx, calibrator, spec, *feats: Tensor):
        """``spec`` is opaque here: handed back to the calibrator."""
        ctx.set_materialize_grads(False)
        ctx.calibrator, ctx.spec = calibrator, spec
        ctx.device = feats[0].device
        return tuple(f.view_as(f) for f in feats)

    @staticmethod
    def backward(ctx, *grads: Optional[Tensor]):
        scales = ctx.calibrator._modality_backward(ctx.spec, list(grads),
                                                   ctx.device)
        return (None, None, *[scale_grad(g, s) for g, s in zip(grads, scales)])
