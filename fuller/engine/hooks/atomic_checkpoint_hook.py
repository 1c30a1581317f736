"""A CheckpointHook whose checkpoints are never half-written.

mmengine 0.10.7's ``CheckpointHook`` (i) deletes the oldest kept checkpoint *before* writing
the new one, (ii) writes the new one in place (``LocalBackend.put`` opens the final name with
``'wb'``) and (iii) rewrites ``last_checkpoint`` in place. A process killed during the write
leaves a truncated ``iter_N.pth`` (or an empty ``last_checkpoint``, which ``--resume`` then
follows), and with ``max_keep_ckpts=1`` no good checkpoint at all.

:class:`AtomicCheckpointHook` writes each checkpoint to ``.<name>.tmp`` in the same folder,
flushes it to disk and renames it into place (``os.replace``, atomic on POSIX); only then does
it point ``last_checkpoint`` at it (itself written atomically) and delete the checkpoints that
fall out of ``max_keep_ckpts``. Stale temp files of a killed run are removed before training.
Every argument is mmengine's ``CheckpointHook``'s, e.g. an iteration-based interval::

    default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False,
                                         interval=500, max_keep_ckpts=3))

Remote backends (``backend_args``) and ``save_best`` keep mmengine's behaviour.
"""
import glob
import os
import os.path as osp

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook

from mmdet3d.registry import HOOKS
from fuller.utils.io import atomic_open

TMP_SUFFIX = '.tmp'


def temp_name(filename: str) -> str:
    """Where ``filename`` is written before it is renamed into place."""
    return f'.{filename}{TMP_SUFFIX}'


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` with temp-then-rename writes and
    deletion of old checkpoints only after the new one is in place."""

    def _local(self) -> bool:
        return isinstance(self.file_backend, LocalBackend)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if self._local() and is_main_process():
            pattern = osp.join(glob.escape(str(self.out_dir)), '.*' + TMP_SUFFIX)
            for stale in glob.glob(pattern):
                runner.logger.warning(f'Removing {stale}: a checkpoint write that never '
                                      'finished (the run was killed while saving)')
                os.remove(stale)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not self._local():
            return super()._save_checkpoint_with_step(runner, step, meta)
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(self.out_dir, temp_name(filename), self.file_client_args,
                               save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler,
                               meta=meta, by_epoch=self.by_epoch,
                               backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        tmp = osp.join(self.out_dir, temp_name(filename))
        _fsync_file(tmp)
        os.replace(tmp, self.last_ckpt)
        _fsync_dir(self.out_dir)
        with atomic_open(osp.join(runner.work_dir, 'last_checkpoint')) as f:
            f.write(self.last_ckpt)
        for old in outdated:
            path = osp.join(self.out_dir, self.filename_tmpl.format(old))
            if osp.isfile(path) and path != self.last_ckpt:
                os.remove(path)
