from .run_meta_hook import RunMetaHook

__all__ = ['RunMetaHook']
