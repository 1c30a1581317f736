"""Load mmengine checkpoints under torch>=2.6 without ``weights_only=False``.

torch 2.6 switched ``torch.load`` to ``weights_only=True``: only tensors,
containers and allow-listed globals may be unpickled. mmengine 0.10.7 calls a
bare ``torch.load`` for ``load_from`` and ``resume``, and the checkpoints it
writes hold a few non-tensor objects: the ``MessageHub`` state (mmengine
``HistoryBuffer`` objects whose buffers are numpy arrays), numpy scalars
(e.g. ``meta['seed']`` may be one) and numpy dtypes. Loading then fails with
``UnpicklingError: Weights only load failed``. One of those globals is
``builtins.getattr``: ``HistoryBuffer.__getstate__`` stores its statistics
methods, which pickle as ``getattr(HistoryBuffer, 'mean')``. Allowing the real
``getattr`` would let a checkpoint read any attribute of any object it can
name, so we map that name to :func:`history_buffer_getattr`, which resolves
nothing but HistoryBuffer's statistics methods.

The fix here is the explicit allow-list below, registered with
``torch.serialization.add_safe_globals``. Every other global still makes the
load fail, as torch intends. We never pass ``weights_only=False``.
"""
import pickle
from typing import List

import numpy as np
import torch


def _numpy_reconstruct_globals() -> List[object]:
    # numpy 2 moved numpy.core to numpy._core; pickles name whichever module
    # wrote them, so allow both spellings that exist in this numpy.
    out = []
    for mod_name in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        try:
            mod = __import__(mod_name, fromlist=['_reconstruct'])
        except ImportError:
            continue
        out += [mod._reconstruct, mod.scalar]
    return out


def _numpy_dtype_classes() -> List[type]:
    kinds = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
             np.uint16, np.uint32, np.uint64, np.float16, np.float32,
             np.float64, np.str_, np.object_)
    return [type(np.dtype(k)) for k in kinds]


def history_buffer_getattr(owner, name: str):
    """``getattr`` as seen by the ``weights_only`` unpickler: only
    ``getattr(HistoryBuffer, <statistics method>)`` is resolved."""
    from mmengine.logging.history_buffer import HistoryBuffer
    allowed = {'min', 'max', 'current', 'mean'}
    allowed.update(HistoryBuffer._statistics_methods)
    if owner is not HistoryBuffer or name not in allowed:
        raise pickle.UnpicklingError(
            f'checkpoint asks for getattr({owner!r}, {name!r}); only '
            f'HistoryBuffer statistics methods {sorted(allowed)} are allowed')
    return getattr(HistoryBuffer, name)


def checkpoint_safe_globals() -> List[object]:
    """The globals an mmengine 0.10.7 checkpoint may reference."""
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer, np.ndarray, np.dtype,
            (history_buffer_getattr, 'builtins.getattr')
            ] + _numpy_reconstruct_globals() + _numpy_dtype_classes()


def register_checkpoint_safe_globals() -> List[object]:
    """Allow mmengine checkpoints to load under ``weights_only=True``.

    Idempotent. Returns the registered allow-list. A no-op on torch builds
    without ``add_safe_globals`` (< 2.4, where the default is unrestricted).
    """
    safe = checkpoint_safe_globals()
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is not None:
        add(safe)
    return safe
