"""GradientCalibrator: the object a model owns to get FULLER's calibration.

Shape shorthand: K tasks, P shared tensors (usually the one shared BEV map
(B, C, Y, X) in the LiDAR BEV frame), M modalities (camera BEV and LiDAR BEV,
(B, C_m, Y, X), the fuser inputs).

Any model becomes a FULLER model by owning ``self.grad_calibrator`` and making
two calls in its training forward::

    cam_bev, lidar_bev = self.grad_calibrator.calibrate_modalities(
        cam_bev, lidar_bev)                      # before the fuser
    shared = self.decoder(self.fuser([cam_bev, lidar_bev]))
    feats = self.grad_calibrator.split_shared(shared, ['det', 'seg'])
    losses = {t: self.heads[t].loss(feats[t], ...) for t in ('det', 'seg')}

and one ``sum(losses).backward()``: the heads get their own gradients, the
trunk gets the task-calibrated gradient (FULLER's inter-gradient calibration
"at the backbone's last layer"; IMTL-G by default) and each modality branch
gets that gradient rescaled to a common magnitude (intra-gradient
calibration). Only gradients flowing through the returned tensors are
calibrated; a loss that reads the original tensors bypasses calibration.

Source. We followed the FULLER paper (Huang et al., ICCV 2023,
arXiv 2307.16617) as far as its abstract and Fig. 2 caption go (the full
method section was not available to us): task gradients are calibrated where
the heads meet the shared backbone, then the magnitudes of the gradients
entering the modality branches are "calibrated again to the same level".
IMTL-G (closed form) at the first level is this project's choice; the other
methods sit behind the same ``task_method`` key.

Modality mode. ``modality_mode='grad'`` (default) rescales the gradients
entering the branches as above. ``'step'`` computes the same factors but
leaves the gradients alone and multiplies each branch's applied optimiser
step by them instead (``step_scaling``: under AdamW a rescaled gradient is
normalised away, a rescaled step is not); it needs a ``BranchStepScaler`` on
the optimiser, which ``GradientCalibrationHook`` attaches.

Modality target. We default to the mean of the two norms ('mean'): the sum
of the two gradient norms reaching the encoders is unchanged, only its split
between camera and LiDAR is equalised. 'max'/'min' or a modality name
('camera'/'lidar') are configurable.
Norms are of the whole batch's gradient (all samples, all ranks).

DDP. Every rank computes its local Gram matrix (K x K) and squared modality
norms (M) in float32 and they are summed with ``torch.distributed.all_reduce``
when a process group is initialised, so all ranks apply identical weights.
The summed Gram is the Gram of the global gradient (the concatenation of the
ranks' gradients) up to DDP's 1/world_size^2 factor, to which every method is
invariant. The all-reduce runs inside backward (as in SyncBatchNorm); every
rank must reach the same calibration calls: the flags are set identically
by ``GradientCalibrationHook`` on every rank, and the model must not drop a
modality (None) or the shared feature on some ranks only.

AMP. Under a GradScaler all gradients carry one common factor s. Weights,
cosines and modality ratios are invariant to it; the logged norms are divided
by ``self.grad_scale`` when the hook can read it from the optimiser wrapper,
otherwise they are logged scaled (``last_stats['loss_scale']`` is None).

Cost. Each calibration reads its K x K / M statistics on the host once per
step (one device sync); the math is done in float64 on the host.

Fallbacks (non-finite gradients are warned once per task/modality; all are
flagged in the stats): see ``task_weights`` for the task level. A modality
whose global gradient is non-finite gets a zero gradient that step; a
zero-gradient modality is left as is and excluded from the target. A disabled
level (e.g. during warm-up) is an exact plain sum / identity: nothing is
changed, and the Functions are only inserted when stats are requested
(``record_stats``).
"""
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
from torch import Tensor

from .grad_functions import ModalityGradCalibration, TaskGradCalibration
from .step_scaling import MODALITY_MODES, modality_step_factors
from .task_weights import (MODALITY_TARGETS, TASK_MAGNITUDES, TASK_METHODS,
                           TaskWeights, compute_task_weights, cosine_matrix,
                           gram_matrix, match_sum_magnitude, modality_scales,
                           task_shares)

SharedFeat = Union[Tensor, Sequence[Tensor]]


class GradientCalibrator:
    """Holds the configuration, state and last statistics of calibration.

    Args:
        task_method: 'imtl_g' (FULLER) | 'sum' | 'mgda_ub' | 'pcgrad'.
        modality_target: 'mean' | 'max' | 'min' | one of ``modality_names``.
        enable_task: apply inter-gradient (task) calibration.
        enable_modality: apply intra-gradient (modality) calibration.
        modality_names: names of the inputs of ``calibrate_modalities``.
        sync_ddp: all-reduce the statistics when torch.distributed is
            initialised with more than one rank.
        seed: seed of PCGrad's task order (combined with the step count).
        zero_tol: relative norm under which a task counts as zero.
        rcond: relative eigenvalue cut-off of IMTL-G's pseudo-inverse.
        task_magnitude: 'weights' uses the method's weights as they are
            (IMTL-G's sum to one, as published); 'sum' keeps their direction
            but scales the aggregated trunk gradient to the length of the
            plain summed gradient (see ``match_sum_magnitude``).
        modality_mode: 'grad' rescales the modality gradients (FULLER as
            published); 'step' applies the same factors to each branch's
            optimiser step instead (see ``step_scaling``).
    """

    def __init__(self, task_method: str = 'imtl_g',
                 modality_target: str = 'mean', enable_task: bool = True,
                 enable_modality: bool = True,
                 modality_names: Sequence[str] = ('camera', 'lidar'),
                 sync_ddp: bool = True, seed: int = 0,
                 zero_tol: float = 1e-10, rcond: float = 1e-6,
                 task_magnitude: str = 'weights',
                 modality_mode: str = 'grad'):
        where = 'fuller/calibration/calibrator.py'
        if modality_mode not in MODALITY_MODES:
            raise ValueError(f'{where}: unknown modality_mode '
                             f'{modality_mode!r}; choose one of '
                             f'{MODALITY_MODES}')
        if task_magnitude not in TASK_MAGNITUDES:
            raise ValueError(f'{where}: unknown task_magnitude '
                             f'{task_magnitude!r}; choose one of '
                             f'{TASK_MAGNITUDES}')
        if task_method not in TASK_METHODS:
            raise ValueError(f'{where}: unknown task_method {task_method!r}; '
                             f'choose one of {TASK_METHODS}')
        names = tuple(modality_names)
        if len(set(names)) != len(names) or len(names) < 2:
            raise ValueError(f'{where}: modality_names must be >= 2 distinct '
                             f'names, got {names}')
        if modality_target not in MODALITY_TARGETS + names:
            raise ValueError(f'{where}: unknown modality_target '
                             f'{modality_target!r}; choose one of '
                             f'{MODALITY_TARGETS + names}')
        self.task_method = task_method
        self.modality_target = modality_target
        self.enable_task = bool(enable_task)
        self.enable_modality = bool(enable_modality)
        self.modality_names = names
        self.sync_ddp = sync_ddp
        self.seed = int(seed)
        self.zero_tol = zero_tol
        self.rcond = rcond
        self.task_magnitude = task_magnitude
        self.modality_mode = modality_mode
        self.step_scaler_attached = False
        self.pending_step_scales: Optional[Dict[str, float]] = None
        self.record_stats = False
        self.grad_scale: Optional[float] = None
        self.step = 0
        self.last_stats: Dict = {}
        self._warned = set()

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(task_method={self.task_method!r}, '
                f'modality_target={self.modality_target!r}, '
                f'enable_task={self.enable_task}, '
                f'enable_modality={self.enable_modality}, '
                f'modality_mode={self.modality_mode!r})')

    # ----------------------------------------------------------- forward API
    def split_shared(self, shared: SharedFeat, task_names: Sequence[str]
                     ) -> Dict[str, SharedFeat]:
        """One view of the shared feature(s) per task, keyed by task name.

        ``shared`` is a tensor or a list of tensors (multi-level features,
        calibrated jointly as one concatenated vector); each task gets the same
        structure back. Every head must consume only its own entry.
        """
        names = list(task_names)
        if not names or len(set(names)) != len(names):
            raise ValueError('fuller/calibration/calibrator.py: split_shared '
                             f'needs distinct task names, got {names}')
        single = isinstance(shared, Tensor)
        tensors = [shared] if single else list(shared)
        use_fn = ((self.enable_task or self.record_stats) and len(names) > 1
                  and torch.is_grad_enabled()
                  and any(t.requires_grad for t in tensors))
        if not use_fn:
            return {name: shared for name in names}
        spec = (tuple(names), self.enable_task)
        outs = TaskGradCalibration.apply(self, spec, len(names), *tensors)
        num = len(tensors)
        per_task = [list(outs[k * num:(k + 1) * num])
                    for k in range(len(names))]
        return {name: (views[0] if single else views)
                for name, views in zip(names, per_task)}

    def calibrate_modalities(self, *feats: Optional[Tensor]
                             ) -> Tuple[Optional[Tensor], ...]:
        """Identity in forward; rescales the modality gradients in backward.

        Takes one tensor per ``modality_names`` (camera BEV, LiDAR BEV by
        default). A None entry (missing sensor) is passed through; with fewer
        than two present modalities nothing is calibrated.
        """
        if len(feats) != len(self.modality_names):
            raise ValueError(
                'fuller/calibration/calibrator.py: calibrate_modalities got '
                f'{len(feats)} tensors for modalities {self.modality_names}')
        if self.modality_mode == 'step':
            self.pending_step_scales = None  # set again by this backward
        present = [i for i, f in enumerate(feats) if f is not None]
        use_fn = ((self.enable_modality or self.record_stats)
                  and len(present) > 1 and torch.is_grad_enabled()
                  and any(feats[i].requires_grad for i in present))
        if not use_fn:
            return tuple(feats)
        names = tuple(self.modality_names[i] for i in present)
        spec = (names, self.enable_modality)
        outs = ModalityGradCalibration.apply(self, spec,
                                             *[feats[i] for i in present])
        result = list(feats)
        for i, out in zip(present, outs):
            result[i] = out
        return tuple(result)

    # ------------------------------------------------ called from backward
    def _all_reduce(self, tensor: Tensor) -> Tensor:
        if (self.sync_ddp and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def _task_backward(self, spec, per_task: List[List[Optional[Tensor]]],
                       device: torch.device) -> List[float]:
        """Weights alpha (K,) as floats; records the task statistics."""
        names, enabled = spec
        num_shared = len(per_task[0])
        gram = gram_matrix([task[0] for task in per_task], device)
        for p in range(1, num_shared):
            gram += gram_matrix([task[p] for task in per_task], device)
        gram = self._all_reduce(gram).to('cpu', torch.float64)
        generator = None
        if self.task_method == 'pcgrad':
            generator = torch.Generator().manual_seed(
                self.seed * 1_000_003 + self.step)
        method = self.task_method if enabled else 'sum'
        result = compute_task_weights(gram, method, self.zero_tol, self.rcond,
                                      generator)
        if enabled and self.task_magnitude == 'sum':
            result.alpha = match_sum_magnitude(gram, result)
        alpha = (result.alpha.tolist() if enabled
                 else [1.0] * len(names))
        self._record_task(names, gram, alpha, result, enabled)
        self.step += 1
        return alpha

    def _modality_backward(self, spec, grads: List[Optional[Tensor]],
                           device: torch.device) -> List[float]:
        """One scale per modality as floats; records the modality stats."""
        names, enabled = spec
        sq = torch.zeros(len(grads), dtype=torch.float32, device=device)
        for i, grad in enumerate(grads):
            if grad is not None:
                flat = grad.reshape(-1).float()
                sq[i] = torch.dot(flat, flat)
        sq = self._all_reduce(sq).to('cpu', torch.float64)
        if enabled:
            target = self.modality_target
            if target not in MODALITY_TARGETS and target not in names:
                target = 'mean'  # the named modality is missing this step
            scales, _ = modality_scales(sq, target, names)
        else:
            scales = torch.ones_like(sq)
        step_scales = None
        if enabled and self.modality_mode == 'step':
            scales, step_scales = modality_step_factors(scales)
            self.pending_step_scales = dict(zip(names, step_scales.tolist()))
            if not self.step_scaler_attached:
                self._warn_once(('modality', 'no_step_scaler'), (
                    "modality_mode='step' but no BranchStepScaler is "
                    'attached to the optimiser (GradientCalibrationHook '
                    'attaches one): the modality level changes nothing'))
        self._record_modality(names, sq, scales, enabled, step_scales)
        return scales.tolist()

    def pop_step_scales(self) -> Optional[Dict[str, float]]:
        """{modality: step factor} of the last backward (step mode), once."""
        scales, self.pending_step_scales = self.pending_step_scales, None
        return scales

    def record_steps(self, norms: Dict[str, float], rel: Dict[str, float],
                     scales: Dict[str, float]) -> None:
        """Store the measured parameter steps (``BranchStepScaler``)."""
        self.last_stats['param_step'] = dict(norm=dict(norms), rel=dict(rel),
                                             scale=dict(scales))

    # ------------------------------------------------------------ statistics
    def _warn_once(self, key: Tuple[str, str], message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(f'GradientCalibrator: {message} (warned once)')

    def _unscale(self, value: float) -> float:
        scale = self.grad_scale
        return value / scale if scale else value

    def _record_task(self, names: Sequence[str], gram: Tensor,
                     alpha: List[float], result: TaskWeights,
                     enabled: bool) -> None:
        norms = gram.diagonal().clamp(min=0).sqrt()
        cos = cosine_matrix(gram)
        excluded = {names[i]: reason for i, reason in result.excluded}
        for name, reason in excluded.items():
            if reason == 'zero':  # e.g. no targets: expected, only logged
                continue
            self._warn_once((name, reason), (
                f'task {name!r} has a {reason} gradient at the shared feature '
                f'(step {self.step}); it gets weight 0 while excluded'))
        ok = [n not in excluded for n in names]
        weights = torch.tensor(alpha, dtype=torch.float64) * torch.tensor(ok)
        finite_gram = torch.where(torch.isfinite(gram), gram,
                                  torch.zeros_like(gram))
        combined_sq = float(weights @ finite_gram @ weights)
        kept = torch.tensor(ok, dtype=torch.float64)
        shares = task_shares(finite_gram * kept[:, None] * kept[None, :],
                             weights)
        stats = dict(
            names=list(names), method=self.task_method, enabled=enabled,
            alpha=dict(zip(names, alpha)),
            norm={n: self._unscale(float(v))
                  for n, v, good in zip(names, norms, ok) if good},
            cos={f'{names[i]}-{names[j]}': float(cos[i, j])
                 for i in range(len(names)) for j in range(i + 1, len(names))
                 if ok[i] and ok[j]},
            cos_matrix=[[float(cos[i, j]) if ok[i] and ok[j] else 0.0
                         for j in range(len(names))]
                        for i in range(len(names))],
            combined_norm=self._unscale(max(combined_sq, 0.0) ** 0.5),
            excluded=excluded, fallback=result.fallback,
            shares={key: {n: float(v) for n, v, good in
                          zip(names, values.tolist(), ok) if good}
                    for key, values in shares.items()})
        self.last_stats['task'] = stats
        self.last_stats['step'] = self.step
        self.last_stats['loss_scale'] = self.grad_scale

    def _record_modality(self, names: Sequence[str], sq: Tensor,
                         scales: Tensor, enabled: bool,
                         step_scales: Optional[Tensor] = None) -> None:
        finite = torch.isfinite(sq)
        for name, good in zip(names, finite.tolist()):
            if not good:
                self._warn_once((name, 'nonfinite'), (
                    f'modality {name!r} has a non-finite gradient; '
                    + ('it is zeroed this step' if enabled else
                       'calibration is disabled, passed through')))
        zeros = torch.zeros_like(sq)
        norms = torch.where(finite, sq.clamp(min=0), zeros).sqrt()
        after = norms * scales
        stats = dict(
            names=list(names), target=self.modality_target, enabled=enabled,
            norm={n: self._unscale(float(v)) for n, v in zip(names, norms)},
            norm_calibrated={n: self._unscale(float(v))
                             for n, v in zip(names, after)},
            scale=dict(zip(names, scales.tolist())),
            nonfinite=[n for n, g in zip(names, finite.tolist()) if not g])
        if step_scales is not None:
            stats['step_scale'] = dict(zip(names, step_scales.tolist()))
        if float(norms[1]) > 0:
            stats['ratio_before'] = float(norms[0] / norms[1])
        if float(after[1]) > 0:
            stats['ratio_after'] = float(after[0] / after[1])
        self.last_stats['modality'] = stats
        self.last_stats['loss_scale'] = self.grad_scale

    def scalar_stats(self, prefix: str = 'calib') -> Dict[str, float]:
        """``last_stats`` flattened to ``{'calib/alpha/det': 0.4, ...}``.

        Keys: alpha/<task>, cos/<a>-<b>, norm/task/<task>,
        norm/task/combined, excluded/<task> (0/1), norm/modality/<m>,
        norm/modality_calibrated/<m>, scale/<m>, modality_ratio/before and
        /after (norm of the first modality over the second: camera / lidar).
        What each task gets (``task_weights.task_shares``): share/<task>,
        share_plain/<task>, proj_rel/<task>. Step mode: step_scale/<m>.
        Measured steps (``BranchStepScaler``): norm/step/<group>,
        step_rel/<group>. NaN values are left out.
        """
        out: Dict[str, float] = {}
        task = self.last_stats.get('task')
        if task:
            for name in task['names']:
                out[f'{prefix}/alpha/{name}'] = task['alpha'][name]
                out[f'{prefix}/excluded/{name}'] = float(
                    name in task['excluded'])
            for name, val in task['norm'].items():
                out[f'{prefix}/norm/task/{name}'] = val
            for pair, val in task['cos'].items():
                out[f'{prefix}/cos/{pair}'] = val
            out[f'{prefix}/norm/task/combined'] = task['combined_norm']
            for key, values in task.get('shares', {}).items():
                for name, val in values.items():
                    if val == val:  # not NaN
                        out[f'{prefix}/{key}/{name}'] = val
        mod = self.last_stats.get('modality')
        if mod:
            for name in mod['names']:
                out[f'{prefix}/norm/modality/{name}'] = mod['norm'][name]
                out[f'{prefix}/norm/modality_calibrated/{name}'] = (
                    mod['norm_calibrated'][name])
                out[f'{prefix}/scale/{name}'] = mod['scale'][name]
            for key in ('before', 'after'):
                if f'ratio_{key}' in mod:
                    out[f'{prefix}/modality_ratio/{key}'] = mod[f'ratio_{key}']
            for name, val in mod.get('step_scale', {}).items():
                out[f'{prefix}/step_scale/{name}'] = val
        step = self.last_stats.get('param_step')
        if step:
            for name, val in step['norm'].items():
                out[f'{prefix}/norm/step/{name}'] = val
            for name, val in step['rel'].items():
                out[f'{prefix}/step_rel/{name}'] = val
        return out

    def reset_stats(self) -> None:
        """Forget the statistics of earlier steps."""
        self.last_stats = {}
