"""GradientCalibrationHook: drives a model's ``grad_calibrator`` from a config.

Config use (``custom_imports = dict(imports=['fuller'])``)::

    custom_hooks = [dict(type='GradientCalibrationHook', warmup_iters=500)]

The hook keeps no calibration state itself: the weights and statistics live
on ``model.grad_calibrator`` (a ``GradientCalibrator``), found through
``runner.model`` (``.module`` when wrapped by DDP). Per iteration it

* before_train_iter: switches each level on (after warm-up) or off (before
  warm-up: plain sum of task gradients, no modality rescale), asks for stats
  on the iterations the LoggerHook prints (same rule: every ``log_interval``
  inner iterations and at the end of an epoch), and passes the AMP loss scale
  so that logged norms are unscaled;
* after_train_iter: pushes ``calibrator.scalar_stats()`` to the message hub
  as ``train/calib/...``; mmengine's LogProcessor strips ``train/``, so the
  text log, ``vis_data/scalars.json`` and TensorBoard get ``calib/alpha/det``,
  ``calib/cos/det-seg``, ``calib/norm/task/det``,
  ``calib/norm/modality/camera``, ``calib/modality_ratio/before`` ... plus
  ``calib/enabled/task`` and ``calib/enabled/modality`` (0/1). Non-loss keys
  are logged with their current value, not smoothed.

Every rank sets the same flags, which keeps the in-backward all-reduce of the
calibrator matched across ranks.

Steps (``step_scaling.BranchStepScaler``, attached to the optimiser in
before_train): with ``log_steps`` the norm of the parameter change of each
group of ``param_prefixes`` (camera branch, LiDAR branch, trunk) is measured
on the logged iterations (``calib/norm/step/<group>``,
``calib/step_rel/<group>``); with the calibrator's ``modality_mode='step'``
each modality branch's step is multiplied by its factor on every step
(``calib/step_scale/<modality>``).
"""
from typing import Dict, Optional, Sequence

import torch
from mmengine.hooks import Hook, LoggerHook
from mmengine.model import is_model_wrapper

from mmdet3d.registry import HOOKS

from .calibrator import GradientCalibrator
from .step_scaling import BranchStepScaler, group_parameters

# MultiTaskBEVFusion's modules per group (parameter-name prefixes).
BEVFUSION_PARAM_PREFIXES = dict(
    camera=('img_backbone.', 'img_neck.', 'view_transform.'),
    lidar=('pts_voxel_encoder.', 'pts_middle_encoder.'),
    trunk=('fuser.', 'decoder.'))


@HOOKS.register_module()
class GradientCalibrationHook(Hook):
    """Warm-up, on/off switches and logging of FULLER's calibration.

    Args:
        enable_task: turn inter-gradient (task) calibration on/off; None
            keeps the model's ``grad_calibrator.enable_task``.
        enable_modality: likewise for intra-gradient (modality) calibration.
        warmup_iters: iterations (``runner.iter`` < warmup_iters) trained with
            both levels off.
        log_interval: record and log stats every this many inner iterations;
            None takes the LoggerHook's interval (50 without one).
        log_during_warmup: also record stats while the levels are off (adds
            the Gram/norm computation on those logged iterations only).
        log_steps: measure each parameter group's step on logged
            iterations (needs ``runner.optim_wrapper.optimizer``).
        param_prefixes: {group: parameter-name prefixes}; a group named like
            a modality is that modality's branch (scaled in step mode).
            None: ``BEVFUSION_PARAM_PREFIXES`` (MultiTaskBEVFusion).
    """

    priority = 'NORMAL'  # before LoggerHook (BELOW_NORMAL) in after_train_iter

    def __init__(self, enable_task: Optional[bool] = None,
                 enable_modality: Optional[bool] = None,
                 warmup_iters: int = 0, log_interval: Optional[int] = None,
                 log_during_warmup: bool = True, log_steps: bool = True,
                 param_prefixes: Optional[Dict[str, Sequence[str]]] = None):
        if warmup_iters < 0:
            raise ValueError('fuller/calibration/calibration_hook.py: '
                             f'warmup_iters must be >= 0, got {warmup_iters}')
        if log_interval is not None and log_interval < 1:
            raise ValueError('fuller/calibration/calibration_hook.py: '
                             f'log_interval must be >= 1, got {log_interval}')
        self.enable_task = enable_task
        self.enable_modality = enable_modality
        self.warmup_iters = warmup_iters
        self.log_interval = log_interval
        self.log_during_warmup = log_during_warmup
        self.log_steps = log_steps
        self.param_prefixes = {
            name: tuple(starts) for name, starts in
            (param_prefixes or BEVFUSION_PARAM_PREFIXES).items()}
        self._levels = None
        self._record = False
        self._step_scaler: Optional[BranchStepScaler] = None

    @staticmethod
    def get_calibrator(runner) -> GradientCalibrator:
        """``runner.model.grad_calibrator`` (DDP unwrapped) or a clear error."""
        model = runner.model
        if is_model_wrapper(model) or (hasattr(model, 'module') and
                                       not hasattr(model, 'grad_calibrator')):
            model = model.module
        calibrator = getattr(model, 'grad_calibrator', None)
        if not isinstance(calibrator, GradientCalibrator):
            raise AttributeError(
                'fuller/calibration/calibration_hook.py: '
                'GradientCalibrationHook needs the model '
                f'({type(model).__name__}) to own a `grad_calibrator` '
                '(fuller.calibration.GradientCalibrator) and to call '
                'split_shared()/calibrate_modalities() in its forward; remove '
                'the hook or use a model that supports calibration '
                f'(found {type(calibrator).__name__}).')
        return calibrator

    def _resolve_levels(self, runner) -> None:
        calibrator = self.get_calibrator(runner)
        task = (calibrator.enable_task if self.enable_task is None
                else bool(self.enable_task))
        modality = (calibrator.enable_modality if self.enable_modality is None
                    else bool(self.enable_modality))
        self._levels = (task, modality)
        if self.log_interval is None:
            loggers = [h for h in getattr(runner, 'hooks', [])
                       if isinstance(h, LoggerHook)]
            self.log_interval = loggers[0].interval if loggers else 50
        self._attach_step_scaler(runner, calibrator)

    def _attach_step_scaler(self, runner, calibrator) -> None:
        """Hook a ``BranchStepScaler`` onto the optimiser when needed."""
        where = 'fuller/calibration/calibration_hook.py'
        scale = calibrator.modality_mode == 'step' and self._levels[1]
        if self._step_scaler is not None or not (scale or self.log_steps):
            return
        optimizer = getattr(getattr(runner, 'optim_wrapper', None),
                            'optimizer', None)
        if not isinstance(optimizer, torch.optim.Optimizer):
            if scale:
                raise TypeError(
                    f"{where}: modality_mode='step' needs one optimiser at "
                    'runner.optim_wrapper.optimizer, found '
                    f'{type(optimizer).__name__}')
            return
        model = runner.model
        if is_model_wrapper(model) or hasattr(model, 'module'):
            model = getattr(model, 'module', model)
        groups = group_parameters(model, self.param_prefixes)
        missing = [m for m in calibrator.modality_names if m not in groups]
        if scale and missing:
            raise ValueError(
                f"{where}: modality_mode='step' needs the parameters of every "
                f'modality branch; param_prefixes {self.param_prefixes} match '
                f'no parameter of {type(model).__name__} for {missing}')
        if not self.log_steps:
            groups = {m: p for m, p in groups.items()
                      if m in calibrator.modality_names}
        if groups:
            self._step_scaler = BranchStepScaler(calibrator, groups).attach(
                optimizer)

    def after_train(self, runner) -> None:
        if self._step_scaler is not None:
            self._step_scaler.detach()
            self._step_scaler = None

    def before_train(self, runner) -> None:
        self._resolve_levels(runner)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        if self._levels is None:
            self._resolve_levels(runner)
        calibrator = self.get_calibrator(runner)
        active = runner.iter >= self.warmup_iters
        calibrator.enable_task = self._levels[0] and active
        calibrator.enable_modality = self._levels[1] and active
        record = (self.every_n_inner_iters(batch_idx, self.log_interval)
                  or self._end_of_epoch(runner, batch_idx))
        self._record = record and (active or self.log_during_warmup)
        calibrator.record_stats = self._record
        if self._record:
            calibrator.reset_stats()
            calibrator.grad_scale = self._loss_scale(runner)

    def _end_of_epoch(self, runner, batch_idx: int) -> bool:
        """LoggerHook's end-of-epoch rule; False for unsized loaders."""
        try:
            return self.end_of_epoch(runner.train_dataloader, batch_idx)
        except TypeError:
            return False

    @staticmethod
    def _loss_scale(runner) -> Optional[float]:
        """The AMP GradScaler's current scale, None without AMP."""
        scaler = getattr(getattr(runner, 'optim_wrapper', None),
                         'loss_scaler', None)
        if scaler is None or not hasattr(scaler, 'get_scale'):
            return None
        if hasattr(scaler, 'is_enabled') and not scaler.is_enabled():
            return None
        return float(scaler.get_scale())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if not self._record:
            return
        calibrator = self.get_calibrator(runner)
        scalars = calibrator.scalar_stats('calib')
        scalars['calib/enabled/task'] = float(calibrator.enable_task)
        scalars['calib/enabled/modality'] = float(calibrator.enable_modality)
        for key, value in scalars.items():
            runner.message_hub.update_scalar(f'train/{key}', value)
        calibrator.record_stats = False
        self._record = False
