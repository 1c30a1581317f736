from .checkpoint_hooks import InitCheckpointCheckHook, PartialCheckpointLoadHook
from .run_meta_hook import RunMetaHook

__all__ = ['RunMetaHook', 'PartialCheckpointLoadHook', 'InitCheckpointCheckHook']
