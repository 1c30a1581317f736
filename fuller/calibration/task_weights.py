"""Pure math of FULLER's gradient calibration: task weights from a Gram matrix
and modality scale factors from squared norms.

Shape shorthand: K tasks, M modalities, N elements of the flattened shared
feature (B * C * Y * X of the shared BEV map).

Names:
    g_i    gradient of task i's loss w.r.t. the shared feature, flattened (N,)
    G      Gram matrix, G[i, j] = g_i . g_j, (K, K)
    n_i    |g_i| = sqrt(G[i, i]);  u_i = g_i / n_i
    C      cosine matrix, C[i, j] = u_i . u_j = G[i, j] / (n_i n_j), (K, K)
    alpha  (K,) weights; the shared trunk receives g = sum_i alpha_i g_i

Every method below needs only G, never the N-long gradients: that is what makes
one all-reduce of a K x K matrix enough under DDP. The weights are computed on
the host in float64 from a float32 Gram (K is tiny).

Methods (``TASK_METHODS``):

``'sum'``
    alpha_i = 1: the plain summed loss (baseline).
``'imtl_g'``
    IMTL-G (Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021),
    the inter-gradient calibration of FULLER. The closed form
    ``alpha_{2..K} = g_1 U^T (D U^T)^-1``, ``alpha_1 = 1 - sum alpha_{2..K}``
    (D rows g_1 - g_t, U rows u_1 - u_t) is the unique solution of
    "g . u_i is the same for every i" and "sum alpha = 1". We solve the same
    conditions in unit-normalised form, which is scale-free and stays
    conditioned when norms differ by 1e6: with beta_i = alpha_i n_i,
    g = sum beta_j u_j and g . u_i = (C beta)_i, so equal projections mean
    ``beta = lam * w`` with ``w = C^-1 1``; sum alpha = 1 gives
    ``lam = 1 / sum_i (w_i / n_i)`` and
    ``alpha_i = w_i / (n_i * sum_k w_k / n_k)``.
    Consequences: the weights are invariant to a common scale of all
    gradients (AMP loss scale, DDP averaging), and because sum alpha = 1 the
    aggregated gradient has the magnitude of a single task gradient (of the
    smaller ones), not of their sum.
``'mgda_ub'``
    MGDA-UB (Sener & Koltun, NeurIPS 2018): the min-norm point of the convex
    hull of the task gradients at the shared representation,
    ``min_{alpha in simplex} alpha^T G alpha``, by Frank-Wolfe with exact line
    search and away steps. Raw (unnormalised) gradients.
``'pcgrad'``
    PCGrad (Yu et al., NeurIPS 2020) applied to the gradients at the shared
    feature. Each projected gradient stays a linear combination of the g_j, so
    we track its coefficients A (g_i^PC = sum_k A[i, k] g_k) and read every
    dot product off G; the result is alpha_k = sum_i A[i, k]. The random
    order of the other tasks comes from a ``torch.Generator`` the caller seeds
    (the calibrator seeds it with (seed, step), so DDP ranks agree).

Fallbacks (each is reported in ``TaskWeights.fallback``/``excluded``):

* a task whose Gram diagonal is not finite (NaN/inf in its gradient) is
  excluded: alpha = 0, it is not used in the solve.
* a task with |g_i| <= ``zero_tol`` * max_j |g_j| (zero gradient, e.g. a head
  with no targets) is excluded likewise: alpha = 0.
* no task left: all alpha = 0 (the trunk gets a zero gradient). One task
  left: alpha = 1 for it.
* IMTL-G with singular or near-singular C (identical, exactly opposite or
  linearly dependent gradients): ``w = pinv(C) 1`` with eigenvalues below
  ``rcond`` * largest dropped (least-squares equal projections). Two identical
  gradients then give alpha_i proportional to 1/n_i, the exact answer.
* IMTL-G when ``sum_k w_k / n_k`` is not clearly positive (exactly opposite
  gradients, where the only equal-projection point is g = 0, or a degenerate
  set whose equal projection would be negative, i.e. ascend every task):
  equal-contribution weights ``alpha_i = (1 / n_i) / sum_k (1 / n_k)``, which
  is the exact IMTL-G answer for K = 2 and gives g = 0 for opposite pairs.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

TASK_METHODS = ('sum', 'imtl_g', 'mgda_ub', 'pcgrad')
MODALITY_TARGETS = ('mean', 'max', 'min')


@dataclass
class TaskWeights:
    """Result of :func:`compute_task_weights` (host tensors, float64).

    alpha: (K,) weights, 0 for excluded tasks, always finite.
    excluded: indices of tasks left out, with the reason ('nonfinite'|'zero').
    fallback: None, or the name of the fallback used by the solver.
    """
    alpha: Tensor
    excluded: List[Tuple[int, str]] = field(default_factory=list)
    fallback: Optional[str] = None


def gram_matrix(grads: Sequence[Optional[Tensor]],
                device: Optional[torch.device] = None) -> Tensor:
    """Gram matrix (K, K) in float32 of K gradients (None = zero).

    Args:
        grads: K gradients g_i of one shared feature, any equal shape (each
            is flattened to (N,)); None stands for a zero gradient.
        device: where the result goes when every gradient is None.

    Each entry is one ``torch.dot`` of the flattened float32 gradients (dot
    is a reduction, so TF32 matmul settings do not touch it). A NaN/inf in
    gradient i only spoils row and column i. ``device`` places the result
    when every gradient is None.
    """
    ref = next((g for g in grads if g is not None), None)
    num = len(grads)
    device = ref.device if ref is not None else device
    gram = torch.zeros(num, num, dtype=torch.float32, device=device)
    flat = [None if g is None else g.reshape(-1).float() for g in grads]
    for i in range(num):
        for j in range(i, num):
            if flat[i] is None or flat[j] is None:
                continue
            val = torch.dot(flat[i], flat[j])
            gram[i, j] = val
            gram[j, i] = val
    return gram


def cosine_matrix(gram: Tensor) -> Tensor:
    """Cosines C[i, j] = G[i, j] / (n_i n_j); 0 where a norm is 0.

    Args:
        gram: Gram matrix G (K, K) of the task gradients.

    Returns:
        C (K, K), float64, clamped to [-1, 1].
    """
    gram = gram.double()
    norms = gram.diagonal().clamp(min=0).sqrt()
    denom = norms[:, None] * norms[None, :]
    cos = torch.where(denom > 0, gram / denom.clamp(min=1e-300),
                      torch.zeros_like(gram))
    return cos.clamp(-1.0, 1.0)


def imtl_g_weights(gram: Tensor, rcond: float = 1e-6
                   ) -> Tuple[Tensor, Optional[str]]:
    """IMTL-G weights of K >= 1 valid tasks (all norms > 0, G finite)."""
    norms = gram.diagonal().sqrt()
    cos = (gram / (norms[:, None] * norms[None, :])).clamp(-1.0, 1.0)
    cos.fill_diagonal_(1.0)
    ones = torch.ones_like(norms)
    eig, vec = torch.linalg.eigh(cos)
    keep = eig > rcond * eig.abs().max()
    inv_eig = torch.where(keep, 1.0 / torch.where(keep, eig, ones), 0 * eig)
    w = vec @ (inv_eig * (vec.T @ ones))
    fallback = None if bool(keep.all()) else 'pinv'
    inv_n = 1.0 / norms
    s = (w * inv_n).sum()
    scale = (w.abs() * inv_n).sum()
    if not torch.isfinite(s) or s <= 1e-9 * scale:
        return inv_n / inv_n.sum(), 'equal_contribution'
    return w * inv_n / s, fallback


def mgda_ub_weights(gram: Tensor, max_iter: int = 1000,
                    tol: float = 1e-12) -> Tuple[Tensor, Optional[str]]:
    """Min-norm point of the convex hull of the gradients.

    Frank-Wolfe with away steps and exact line search on
    f(alpha) = alpha^T G alpha (linear convergence on the simplex, so the
    support is found exactly); stops when the Frank-Wolfe gap < ``tol``.
    """
    num = gram.shape[0]
    gram = gram / gram.diagonal().max()
    alpha = torch.full((num,), 1.0 / num, dtype=gram.dtype)
    eye = torch.eye(num, dtype=gram.dtype)
    for _ in range(max_iter):
        grad = gram @ alpha
        toward = int(torch.argmin(grad))
        support = alpha > 0
        away = int(torch.argmax(torch.where(support, grad,
                                            torch.full_like(grad, -1e300))))
        d_fw = eye[toward] - alpha
        gap = float(-(grad @ d_fw))
        if gap < tol:
            break
        d_away = alpha - eye[away]
        if gap >= float(-(grad @ d_away)) or alpha[away] >= 1.0:
            direction, gamma_max = d_fw, 1.0
        else:
            direction = d_away
            gamma_max = float(alpha[away] / (1.0 - alpha[away]))
        curv = float(direction @ gram @ direction)
        slope = float(direction @ grad)
        gamma = gamma_max if curv <= 0 else min(max(-slope / curv, 0.0),
                                                gamma_max)
        alpha = (alpha + gamma * direction).clamp(min=0.0)
        if gamma == gamma_max and direction is d_away:
            alpha[away] = 0.0  # drop step: the away vertex leaves the support
        alpha = alpha / alpha.sum()
    return alpha, None


def pcgrad_weights(gram: Tensor, generator: Optional[torch.Generator] = None
                   ) -> Tuple[Tensor, Optional[str]]:
    """PCGrad combination weights from the Gram matrix (see module doc)."""
    num = gram.shape[0]
    coef = torch.eye(num, dtype=gram.dtype)
    for i in range(num):
        order = torch.randperm(num, generator=generator).tolist()
        for j in order:
            if j == i:
                continue
            dot = coef[i] @ gram[:, j]
            if dot < 0:
                coef[i, j] -= dot / gram[j, j]
    return coef.sum(dim=0), None


def compute_task_weights(gram: Tensor, method: str = 'imtl_g',
                         zero_tol: float = 1e-10, rcond: float = 1e-6,
                         generator: Optional[torch.Generator] = None
                         ) -> TaskWeights:
    """Weights alpha (K,) for ``method`` from a (K, K) Gram matrix.

    Excludes non-finite and zero tasks first (module doc), then solves on the
    remaining ones. The Gram is moved to the host as float64.

    Args:
        gram: Gram matrix G (K, K) of the task gradients (all-reduced under
            DDP).
        method: one of ``TASK_METHODS``.
        zero_tol: a task whose norm n_i is at most ``zero_tol`` times the
            largest norm counts as zero and is excluded.
        rcond: eigenvalues of C below ``rcond`` times the largest are dropped
            (pseudo-inverse) in the IMTL-G solve.
        generator: random generator of PCGrad's task order (None: torch's
            default generator).

    Returns:
        ``TaskWeights``: alpha (K,) float64 on the host (0 for excluded
        tasks), the excluded tasks and the fallback used, if any.
    """
    if method not in TASK_METHODS:
        raise ValueError(f'fuller/calibration/task_weights.py: unknown task '
                         f'method {method!r}; choose one of {TASK_METHODS}')
    gram = gram.detach().to('cpu', torch.float64)
    num = gram.shape[0]
    diag = gram.diagonal()
    finite = torch.isfinite(diag)
    zeros = torch.zeros_like(diag)
    norms = torch.where(finite, diag.clamp(min=0), zeros).sqrt()
    max_norm = float(norms.max()) if num else 0.0
    nonzero = norms > zero_tol * max_norm if max_norm > 0 else norms > 0
    valid = finite & nonzero
    excluded = [(i, 'nonfinite' if not bool(finite[i]) else 'zero')
                for i in range(num) if not bool(valid[i])]
    alpha = torch.zeros(num, dtype=torch.float64)
    idx = valid.nonzero().flatten()
    sub = gram[idx][:, idx]
    if idx.numel() == 0 or not bool(torch.isfinite(sub).all()):
        return TaskWeights(alpha, excluded, 'no_valid_task')
    if method == 'sum':
        alpha[idx] = 1.0
        return TaskWeights(alpha, excluded, None)
    if idx.numel() == 1:
        alpha[idx] = 1.0
        return TaskWeights(alpha, excluded,
                           'single_task' if excluded else None)
    sub = sub / sub.diagonal().max()
    if method == 'imtl_g':
        sub_alpha, fallback = imtl_g_weights(sub, rcond)
    elif method == 'mgda_ub':
        sub_alpha, fallback = mgda_ub_weights(sub)
    else:
        sub_alpha, fallback = pcgrad_weights(sub, generator)
    if not bool(torch.isfinite(sub_alpha).all()):
        inv_n = 1.0 / sub.diagonal().sqrt()
        sub_alpha, fallback = inv_n / inv_n.sum(), 'equal_contribution'
    alpha[idx] = sub_alpha
    return TaskWeights(alpha, excluded, fallback)


def modality_scales(sq_norms: Tensor, target: str = 'mean',
                    names: Sequence[str] = ('camera', 'lidar')
                    ) -> Tuple[Tensor, float]:
    """Per-modality factors that bring every gradient norm to one target.

    Args:
        sq_norms: (M,) squared gradient norms (summed over DDP ranks).
        target: 'mean' | 'max' | 'min' of the norms, or a modality name
            (the others are scaled to that modality's norm).
        names: the M modality names, in order.

    Returns:
        scales (M,) float64 host tensor and the target norm. A modality with
        zero or non-finite norm is left out of the target and gets scale 1
        (zero) or 0 (non-finite: its gradient is dropped). If no modality is
        usable, or the named target modality is not, every usable modality
        keeps scale 1.
    """
    sq_norms = sq_norms.detach().to('cpu', torch.float64)
    finite = torch.isfinite(sq_norms)
    norms = torch.where(finite, sq_norms.clamp(min=0),
                        torch.zeros_like(sq_norms)).sqrt()
    usable = finite & (norms > 0)
    scales = finite.to(torch.float64)  # 1 = untouched, 0 = dropped
    if not bool(usable.any()):
        return scales, 0.0
    pool = norms[usable]
    if target == 'mean':
        tgt = float(pool.mean())
    elif target == 'max':
        tgt = float(pool.max())
    elif target == 'min':
        tgt = float(pool.min())
    elif target in names:
        k = list(names).index(target)
        if not bool(usable[k]):
            return scales, 0.0
        tgt = float(norms[k])
    else:
        raise ValueError(
            f'fuller/calibration/task_weights.py: unknown modality target '
            f'{target!r}; choose one of {MODALITY_TARGETS + tuple(names)}')
    scales = torch.where(usable, tgt / norms.clamp(min=1e-300), scales)
    return scales, tgt


TASK_MAGNITUDES = ('weights', 'sum')


def match_sum_magnitude(gram: Tensor, weights: TaskWeights) -> Tensor:
    """Rescale ``weights.alpha`` so that ``|sum_k alpha_k g_k|`` equals the
    norm of the plain sum of the kept tasks' gradients, ``|sum_k g_k|``.

    IMTL-G's weights sum to one, so its aggregated gradient is about as long
    as a single (the smaller) task gradient: calibration then also shrinks
    the step the shared trunk takes, most for the task with the largest
    gradient. With ``task_magnitude='sum'`` only the direction is
    calibrated and the trunk's step keeps the plain sum's length. Both norms
    come from the Gram matrix (already all-reduced under DDP). Excluded
    tasks do not count; if either norm is zero or not finite the weights are
    returned unchanged.

    Args:
        gram: Gram matrix G (K, K) of the task gradients.
        weights: the calibrated weights (alpha (K,) and excluded tasks).

    Returns:
        The rescaled alpha (K,), float64.
    """
    alpha = weights.alpha.to(torch.float64)
    gram = gram.to(torch.float64)
    keep = torch.ones_like(alpha, dtype=torch.bool)
    for index, _ in weights.excluded:
        keep[index] = False
    if not keep.any():
        return alpha
    sub = gram[keep][:, keep]
    plain = sub.sum()
    calibrated = alpha[keep] @ sub @ alpha[keep]
    if not (torch.isfinite(plain) and torch.isfinite(calibrated)) or \
            plain <= 0 or calibrated <= 0:
        return alpha
    return alpha * torch.sqrt(plain / calibrated)


def task_shares(gram: Tensor, alpha: Tensor) -> dict:
    """What each task gets from the applied shared-feature gradient.

    Args:
        gram: Gram matrix G (K, K) of the task gradients.
        alpha: applied weights (K,).

    With g = sum_j alpha_j g_j (applied) and s = sum_j g_j (plain sum), all
    read off the Gram matrix G (K, K) and alpha (K,) (excluded tasks: alpha 0
    and, for the plain sum, left out by passing a Gram with their rows and
    columns zeroed):

    ``share``       alpha_i g_i . g / |g|^2 = alpha_i (G alpha)_i / a^T G a:
                    task i's term's part of the applied update, measured
                    along the update; the K shares sum to 1.
    ``share_plain`` g_i . s / |s|^2 = (G 1)_i / 1^T G 1: the same for the
                    plain sum.
    ``proj_rel``    (g . u_i) / (s . u_i) = (G alpha)_i / (G 1)_i: the
                    projection of the applied gradient on task i's unit
                    gradient relative to the plain sum's (1: the task gets
                    what the plain sum gives it along its own direction; the
                    first-order decrease of L_i scales with it under SGD).

    Returns {'share': (K,), 'share_plain': (K,), 'proj_rel': (K,)} float64
    host tensors; NaN where a denominator is zero (no update, or a task whose
    plain-sum projection vanishes).
    """
    gram = gram.detach().to('cpu', torch.float64)
    alpha = alpha.detach().to('cpu', torch.float64)
    ones = torch.ones_like(alpha)
    g_alpha, g_ones = gram @ alpha, gram @ ones
    applied_sq, plain_sq = float(alpha @ g_alpha), float(ones @ g_ones)
    nan = torch.full_like(alpha, float('nan'))
    scale = max(float(gram.diagonal().abs().max()), 1e-300) if \
        gram.numel() else 1.0
    tiny = 1e-12 * scale
    share = alpha * g_alpha / applied_sq if applied_sq > tiny else nan
    share_plain = g_ones / plain_sq if plain_sq > tiny else nan
    proj_rel = torch.where(g_ones.abs() > tiny,
                           g_alpha / torch.where(g_ones.abs() > tiny, g_ones,
                                                 ones), nan)
    return dict(share=share, share_plain=share_plain, proj_rel=proj_rel)
