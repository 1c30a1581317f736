"""Step form of the modality calibration, and the step each branch takes.

Shape shorthand: M modalities (camera BEV and LiDAR BEV, the fuser inputs,
each (B, C_m, Y, X)); a parameter group is a list of parameter tensors of any
shapes (a modality branch: camera = image backbone + neck + view transform,
LiDAR = voxel encoder + sparse encoder; or the trunk = fuser + decoder).

Why a step form. The gradient form of the intra-gradient calibration
(``GradientCalibrator(modality_mode='grad')``, the default) multiplies the
gradient entering modality m's branch by ``s_m = T / n_m``. Under SGD a
branch's update is linear in its gradient, so its step is multiplied by s_m
too. AdamW divides every parameter's step by the root of that parameter's own
second-moment estimate: a factor that stays constant over steps cancels (up to
eps), and one that drifts only reweights the steps inside the moment
averages. The gradient form then barely changes what the branches learn.

Definition (``modality_mode='step'``). Per step, with

* ``g_m``: the whole-batch gradient (all samples, all DDP ranks) of the loss
  w.r.t. modality m's BEV feature, ``n_m = |g_m|``;
* ``T``: the target norm (``modality_target``: mean / max / min of the n_m or
  a named modality's norm), ``s_m = T / n_m`` (exactly the factors of the
  gradient form);
* ``W_m``: the parameters of modality m's branch, ``D_m^opt`` the change
  ``optimizer.step()`` makes to them from the UNcalibrated gradients (weight
  decay, momentum and clipping included),

the step form leaves every gradient as it is (so the optimiser's moments and
gradient clipping see the plain gradients) and, right after
``optimizer.step()``, sets::

    W_m <- W_m^before + s_m * D_m^opt        (applied step D_m = s_m D_m^opt)

What ends up equal across modalities: ``n_m * |D_m| / |D_m^opt| = T``, the
modality's BEV-gradient norm times the factor applied to its branch's step.
The gradient form equalises ``|s_m g_m| = T``; the step form moves the same
factor from the gradient to the step, where an adaptive optimiser cannot
normalise it away. Consequences:

* plain SGD (no momentum, no weight decay): ``D_m = -lr J_m^T (s_m g_m)``,
  identical to the gradient form (tested);
* any optimiser: the ratio of the two branches' steps changes by
  ``s_cam / s_lidar = n_lidar / n_cam``. Under AdamW, whose own step hardly
  depends on n_m, the branch whose gradient at the fuser is weaker takes the
  proportionally larger step;
* the trunk (fuser, decoder) and the heads are not touched, nor is the
  optimiser state (exp_avg, exp_avg_sq): only the applied change.

Edge cases follow the gradient form: a modality with zero gradient gets
s_m = 1; a non-finite one has its gradient zeroed (as in the gradient form)
and its step scale set to 1. A disabled level (warm-up) scales nothing. DDP:
the n_m are all-reduced, so every rank applies the same factors and the
replicas stay identical. AMP: a GradScaler that skips ``optimizer.step()``
(inf/NaN) also skips these hooks. Gradient accumulation: the factors of the
last backward before the step are used.

Measured step (diagnostic, any mode). On iterations where the calibrator
records statistics, ``|D_g|`` (the norm of the parameter change made by the
step, after any scaling) and ``|D_g| / |W_g^before|`` are recorded for every
named group, logged as ``calib/norm/step/<group>`` and
``calib/step_rel/<group>``.

Cost: a copy of the scaled groups' parameters held during
``optimizer.step()`` on every step in step mode, and of every measured group
on logged iterations only; two foreach ops per group.
"""
from typing import Dict, List, Sequence

import torch
from torch import Tensor, nn

MODALITY_MODES = ('grad', 'step')


def apply_step_scale_(params: Sequence[Tensor], before: List[Tensor],
                      scale: float) -> float:
    """``p <- before + scale * (p - before)`` in place; returns |new step|^2.

    ``before`` (the parameters before the step) is overwritten (it holds
    ``before - p`` afterwards) so that no second copy is allocated. The
    squared norm is accumulated in float64.

    Args:
        params: the branch's parameters after ``optimizer.step()``.
        before: copies of ``params`` taken before the step, same shapes.
        scale: the factor s applied to the step.

    Returns:
        |new step|^2, the squared norm of ``p - before`` after scaling.
    """
    if not params:
        return 0.0
    with torch.no_grad():
        current = [p.detach() for p in params]
        torch._foreach_sub_(before, current)  # before := -D^opt
        if scale != 1.0:
            torch._foreach_add_(current, before, alpha=-(scale - 1.0))
        sq = sum(float(d.double().pow(2).sum()) for d in before)
    return sq * scale * scale


class BranchStepScaler:
    """Optimizer step hooks that rescale (step form) and measure group steps.

    Args:
        calibrator: the model's ``GradientCalibrator``. Read at each step:
            ``pop_step_scales()`` ({modality: s_m} set by its modality
            backward in step mode, else None) and ``record_stats`` (measure
            this step); the measured norms go to ``record_steps()``.
        groups: {group name: parameters}. A group named like a modality gets
            that modality's step scale; every group is measured.
    """

    def __init__(self, calibrator, groups: Dict[str, Sequence[nn.Parameter]]):
        if not groups:
            raise ValueError('fuller/calibration/step_scaling.py: '
                             'BranchStepScaler needs at least one group')
        self.calibrator = calibrator
        self.groups = {name: list(params) for name, params in groups.items()}
        empty = [name for name, params in self.groups.items() if not params]
        if empty:
            raise ValueError('fuller/calibration/step_scaling.py: parameter '
                             f'groups {empty} are empty')
        self._handles = []
        self._pending: Dict[str, tuple] = {}
        self._measure = False

    def attach(self, optimizer: torch.optim.Optimizer) -> 'BranchStepScaler':
        """Register the pre/post step hooks on ``optimizer``."""
        if self._handles:
            raise RuntimeError('fuller/calibration/step_scaling.py: '
                               'BranchStepScaler is already attached')
        self._handles = [
            optimizer.register_step_pre_hook(self._before_step),
            optimizer.register_step_post_hook(self._after_step)]
        self.calibrator.step_scaler_attached = True
        return self

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.calibrator.step_scaler_attached = False

    def _before_step(self, optimizer, args, kwargs) -> None:
        scales = self.calibrator.pop_step_scales() or {}
        self._measure = bool(self.calibrator.record_stats)
        self._pending = {}
        with torch.no_grad():
            for name, params in self.groups.items():
                scale = float(scales.get(name, 1.0))
                if scale != 1.0 or self._measure:
                    before = [p.detach().clone() for p in params]
                    self._pending[name] = (scale, before)

    def _after_step(self, optimizer, args, kwargs) -> None:
        norms, rel, applied = {}, {}, {}
        for name, (scale, before) in self._pending.items():
            params = self.groups[name]
            if self._measure:
                w_sq = sum(float(b.double().pow(2).sum()) for b in before)
            sq = apply_step_scale_(params, before, scale)
            applied[name] = scale
            if self._measure:
                norms[name] = sq ** 0.5
                rel[name] = norms[name] / w_sq ** 0.5 if w_sq > 0 else 0.0
        self._pending = {}
        if self._measure:
            self.calibrator.record_steps(norms, rel, applied)


def group_parameters(model: nn.Module,
                     prefixes: Dict[str, Sequence[str]],
                     ) -> Dict[str, List[nn.Parameter]]:
    """{group: trainable parameters whose name starts with a prefix}.

    Args:
        model: the model whose ``named_parameters()`` are grouped.
        prefixes: {group: parameter-name prefixes}, e.g.
            ``{'camera': ['img_backbone.', 'img_neck.']}``.

    Groups that match nothing are left out; a parameter matched by two
    groups is an error (its step would be scaled twice).
    """
    groups: Dict[str, List[nn.Parameter]] = {}
    owner: Dict[str, str] = {}
    for pname, param in model.named_parameters():
        if not param.requires_grad:
            continue
        for group, starts in prefixes.items():
            if any(pname.startswith(s) for s in starts):
                if pname in owner:
                    raise ValueError(
                        'fuller/calibration/step_scaling.py: parameter '
                        f'{pname!r} matches groups {owner[pname]!r} and '
                        f'{group!r}; make the prefixes disjoint')
                owner[pname] = group
                groups.setdefault(group, []).append(param)
    return groups


def modality_step_factors(scales: Tensor) -> tuple:
    """Split the gradient form's factors into (gradient, step) factors.

    ``scales`` (M,) from ``modality_scales``: T / n_m for usable modalities,
    1 for a zero gradient, 0 for a non-finite one. Step form: the gradient
    keeps factor 1 (0 for non-finite, dropped as in the gradient form) and
    the step gets T / n_m (1 where the gradient form gives 0 or 1).
    """
    ones = torch.ones_like(scales)
    grad = torch.where(scales > 0, ones, torch.zeros_like(scales))
    step = torch.where(scales > 0, scales, ones)
    return grad, step
