from .hooks import RunMetaHook

__all__ = ['RunMetaHook']
