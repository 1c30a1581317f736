"""Fixes for known traps of the pinned environment, kept in fuller's own code.

- :mod:`.spconv_algo`: spconv sparse convolutions built by mmdet3d default to
  CUDA-only algorithms; :func:`set_spconv_algo` switches a built model to
  ``ConvAlgo.Native`` on CPU and back on GPU.
- :mod:`.checkpoint`: mmengine 0.10.7 loads checkpoints with a bare
  ``torch.load``, which under torch>=2.6 (``weights_only=True``) rejects the
  numpy and mmengine objects mmengine itself saves. We allow exactly those
  globals (an explicit allow-list), never ``weights_only=False``.
"""
from .checkpoint import (checkpoint_safe_globals,
                         register_checkpoint_safe_globals)
from .spconv_algo import SparseConvAlgoHook, set_spconv_algo

__all__ = [
    'set_spconv_algo', 'SparseConvAlgoHook', 'checkpoint_safe_globals',
    'register_checkpoint_safe_globals'
]
