"""Test helper (not a test module): a hook that kills its own training process with SIGKILL
part-way through writing a checkpoint, as a crash or an OOM killer would.

Imported by the training subprocesses of test_exact_resume.py through ``custom_imports``.
"""
import os
import signal

from mmengine.fileio import LocalBackend
from mmengine.hooks import Hook

from mmdet3d.registry import HOOKS


@HOOKS.register_module()
class SigkillDuringSaveHook(Hook):
    """SIGKILL the process when half of the checkpoint whose file name
    contains ``name`` has been written."""

    def __init__(self, name: str) -> None:
        self.name = name

    def before_train(self, runner) -> None:
        put = LocalBackend.put
        name = self.name

        def put_then_die(backend, obj, filepath):
            if name not in os.path.basename(str(filepath)):
                return put(backend, obj, filepath)
            with open(filepath, 'wb') as f:
                f.write(obj[:len(obj) // 2])
                f.flush()
                os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

        LocalBackend.put = put_then_die
