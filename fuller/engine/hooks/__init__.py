from .checkpoint_hooks import InitCheckpointCheckHook, PartialCheckpointLoadHook
from .config_check_hook import ConfigCheckHook
from .run_meta_hook import RunMetaHook

__all__ = ['RunMetaHook', 'PartialCheckpointLoadHook', 'InitCheckpointCheckHook',
           'ConfigCheckHook']
