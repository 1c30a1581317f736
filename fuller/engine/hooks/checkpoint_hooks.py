"""Hooks for starting a run from pretrained weights.

- :class:`PartialCheckpointLoadHook`: initialises the model from a checkpoint
  through :func:`fuller.utils.checkpoint_loading.load_checkpoint_partial`
  (report of loaded / missing / unexpected keys; shape mismatches raise unless
  allow-listed). This is how the fusion stage of the two-stage recipe starts
  from the LiDAR-only checkpoint, and what ``tools/train.py --load-from`` uses.
- :class:`InitCheckpointCheckHook`: before weights are initialised, checks
  that every local file named by a module's ``init_cfg.checkpoint`` exists
  (e.g. the user-supplied Swin-T checkpoint), with an error that names the
  module, the path and where to set it.
"""
import os
from typing import Optional, Sequence

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop

from mmdet3d.registry import HOOKS
from fuller.utils.checkpoint_loading import (check_init_checkpoints,
                                             load_checkpoint_partial)


@HOOKS.register_module()
class PartialCheckpointLoadHook(Hook):
    """Load ``checkpoint`` into the model once, before the first iteration.

    Runs in ``before_train``, i.e. after mmengine has initialised the weights
    (``init_cfg``, e.g. a pretrained image backbone) and after ``resume``.
    A resumed run (``runner.iter > 0``) keeps its resumed weights.

    Args:
        checkpoint: path of the checkpoint (this project's module names; use
            ``tools/convert_checkpoint.py`` for mmdet3d's BEVFusion ones).
        allow_shape_mismatch: ``fnmatch`` patterns of model keys that may
            differ in shape (those keys stay as initialised); any other
            mismatch stops the run.
        report_file: file name of the JSON report in the work dir.
    """

    priority = 'VERY_HIGH'

    def __init__(self, checkpoint: str,
                 allow_shape_mismatch: Sequence[str] = (),
                 report_file: str = 'load_report.json') -> None:
        if not checkpoint:
            raise ValueError('PartialCheckpointLoadHook: checkpoint is empty')
        self.checkpoint = checkpoint
        self.allow_shape_mismatch = tuple(allow_shape_mismatch)
        self.report_file = report_file

    def before_train(self, runner) -> None:
        if runner.iter > 0:
            runner.logger.info(
                f'PartialCheckpointLoadHook: resumed at iteration '
                f'{runner.iter}; not loading {self.checkpoint}')
            return
        model = runner.model.module if is_model_wrapper(runner.model) \
            else runner.model
        report_path = os.path.join(runner.work_dir, self.report_file) \
            if is_main_process() else None
        report = load_checkpoint_partial(
            model, self.checkpoint,
            allow_shape_mismatch=self.allow_shape_mismatch,
            report_path=report_path)
        runner.logger.info('PartialCheckpointLoadHook: ' + report.summary())
        if report_path is not None:
            runner.logger.info(f'PartialCheckpointLoadHook: full key lists '
                               f'in {report_path}')


@HOOKS.register_module()
class InitCheckpointCheckHook(Hook):
    """Fail early, before ``init_weights``, when a pretrained file named in an
    ``init_cfg`` of the model does not exist (training runs only: testing a
    trained checkpoint does not need the pretrained file).

    Args:
        hint: appended to the error, e.g. which config variable to set.
    """

    priority = 'VERY_HIGH'

    def __init__(self, hint: Optional[str] = None) -> None:
        self.hint = hint

    def before_run(self, runner) -> None:
        # Only a training run initialises weights from init_cfg; Runner.train
        # builds its train loop before calling before_run, test/val do not
        # (the public ``train_loop`` property would build it).
        if not isinstance(getattr(runner, '_train_loop', None), BaseLoop):
            return
        check_init_checkpoints(runner.model, hint=self.hint)
