"""Record what a run was trained with, and warn when a resumed or loaded
checkpoint disagrees with the current run.

Published BEVFusion-style numbers are often not reproduced because of hidden
differences: another commit, another global batch size than the learning
rate was tuned for. Every checkpoint written with this hook carries, under
``checkpoint['meta']['fuller']``: fuller's version, the git commit, the
world size, the per-GPU and effective batch size and the config's
``auto_scale_lr.base_batch_size``. (mmengine already stores the config text
in ``meta['cfg']``.)
"""
from typing import Optional

from mmengine.dist import get_world_size
from mmengine.hooks import Hook

from mmdet3d.registry import HOOKS

from ...utils.collect_env import git_hash
from ...version import __version__


@HOOKS.register_module()
class RunMetaHook(Hook):
    """Saves run metadata in checkpoints and checks it when loading.

    Args:
        warn_keys: meta entries compared between a loaded checkpoint and the
            current run; a difference logs a warning (never an error: loading
            LiDAR-only weights into a fusion run is a legitimate recipe).
    """

    priority = 'VERY_LOW'

    def __init__(self,
                 warn_keys=('git_hash', 'effective_batch_size')) -> None:
        self.warn_keys = tuple(warn_keys)

    @staticmethod
    def run_meta(runner) -> dict:
        cfg = runner.cfg
        loader = cfg.get('train_dataloader') or {}
        batch = loader.get('batch_size')
        world = get_world_size()
        auto_lr = cfg.get('auto_scale_lr') or {}
        return dict(
            fuller_version=__version__,
            git_hash=git_hash(),
            world_size=world,
            batch_size_per_gpu=batch,
            effective_batch_size=None if batch is None else batch * world,
            base_batch_size=auto_lr.get('base_batch_size'))

    def before_train(self, runner) -> None:
        meta = self.run_meta(runner)
        base, eff = meta['base_batch_size'], meta['effective_batch_size']
        auto_lr = runner.cfg.get('auto_scale_lr') or {}
        if base and eff and base != eff and not auto_lr.get('enable', False):
            runner.logger.warning(
                f'Effective batch size {eff} (= {meta["batch_size_per_gpu"]} '
                f'x {meta["world_size"]} GPUs) differs from the '
                f'base_batch_size {base} the learning rate was set for. '
                'Pass --auto-scale-lr to scale it linearly.')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})['fuller'] = self.run_meta(runner)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved: Optional[dict] = (checkpoint.get('meta') or {}).get('fuller')
        if saved is None:
            runner.logger.warning(
                'Loaded checkpoint carries no fuller run metadata '
                '(not written by fuller\'s tools?); cannot check it.')
            return
        current = self.run_meta(runner)
        for key in self.warn_keys:
            if saved.get(key) != current.get(key):
                runner.logger.warning(
                    f'Checkpoint was written with {key}={saved.get(key)!r}, '
                    f'this run has {key}={current.get(key)!r}.')
