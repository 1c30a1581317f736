"""Fixes for known traps of the pinned environment, kept in fuller's own code.

- :mod:`.spconv_algo`: spconv sparse convolutions built by mmdet3d default to
  CUDA-only algorithms; :func:`set_spconv_algo` switches a built model to
  ``ConvAlgo.Native`` on CPU and back on GPU.
- :mod:`.checkpoint`: mmengine 0.10.7 loads checkpoints with a bare
  ``torch.load``, which under torch>=2.6 (``weights_only=True``) rejects the
  numpy and mmengine objects mmengine itself saves. We allow exactly those
  globals (an explicit allow-list), never ``weights_only=False``.
- :mod:`.config_formatting`: mmengine's ``Config.pretty_text`` runs yapf on
  every access (seconds each, several times per run on the same config);
  :func:`memoise_config_formatting`, applied when this package is imported,
  formats each distinct text once (the same output: yapf is deterministic).
- :mod:`.third_party_warnings`: deprecation warnings of spconv, mmengine,
  mmdet and their dependencies that fuller triggers and cannot fix, each
  silenced by its exact message and module (installed first, here).
"""
from .third_party_warnings import ignore_third_party_warnings

ignore_third_party_warnings()  # before the imports below trigger them

from .checkpoint import (checkpoint_safe_globals,  # noqa: E402
                         register_checkpoint_safe_globals)
from .config_formatting import memoise_config_formatting  # noqa: E402
from .spconv_algo import SparseConvAlgoHook, set_spconv_algo  # noqa: E402

memoise_config_formatting()

__all__ = [
    'set_spconv_algo', 'SparseConvAlgoHook', 'checkpoint_safe_globals',
    'register_checkpoint_safe_globals', 'memoise_config_formatting',
    'ignore_third_party_warnings'
]
