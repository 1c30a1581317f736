"""Switch spconv sparse convolutions between CPU- and GPU-capable algorithms.

spconv 2.x picks ``ConvAlgo.MaskImplicitGemm`` for every layer built with a
CUDA-enabled wheel (mmdet3d's ``SparseEncoder`` relies on that default), and
that algorithm has no CPU kernel: a forward pass on CPU fails inside spconv.
``ConvAlgo.Native`` (gather-GEMM-scatter) runs on both devices. spconv >= 2.2
stores every weight in the KRSC layout whatever the algorithm
(``spconv.constants.ALL_WEIGHT_IS_KRSC``), so switching the algorithm of a
built (or trained) model does not touch its weights.
"""
from typing import Optional, Union

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from torch import nn

from mmdet3d.registry import HOOKS

_ORIG_ALGO_ATTR = '_fuller_gpu_algo'


def _sparse_modules(model: nn.Module):
    try:
        from spconv.pytorch.conv import SparseConvolution
        from spconv.pytorch.pool import SparseMaxPool
    except ImportError:  # spconv not installed: nothing to switch
        return []
    return [
        m for m in model.modules()
        if isinstance(m, (SparseConvolution, SparseMaxPool))
    ]


def _check_weight_layout():
    from spconv import constants
    if not getattr(constants, 'ALL_WEIGHT_IS_KRSC', False):
        raise RuntimeError(
            'set_spconv_algo: this spconv build stores weights in an '
            'algorithm-dependent layout (ALL_WEIGHT_IS_KRSC is False); '
            'switching algorithms would scramble weights. Use spconv>=2.2.')


def set_spconv_algo(model: nn.Module,
                    device: Optional[Union[str, torch.device]] = None) -> int:
    """Make every spconv layer of ``model`` runnable on ``device``.

    On CPU each sparse conv/pool is set to ``ConvAlgo.Native`` and its
    original algorithm is remembered; on CUDA the remembered algorithm is
    restored (layers never switched keep theirs). Idempotent.

    Args:
        model: a built model (DDP/MMDistributedDataParallel wrappers are
            unwrapped).
        device: target device; default: the device of the model's first
            parameter (CPU for a parameter-less model).

    Returns:
        The number of sparse layers whose algorithm changed.
    """
    from spconv.core import ConvAlgo
    if is_model_wrapper(model):
        model = model.module
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device('cpu')
    device = torch.device(device)
    layers = _sparse_modules(model)
    if not layers:
        return 0
    _check_weight_layout()
    changed = 0
    for layer in layers:
        if device.type == 'cuda':
            target = getattr(layer, _ORIG_ALGO_ATTR, layer.algo)
        else:
            if not hasattr(layer, _ORIG_ALGO_ATTR):
                setattr(layer, _ORIG_ALGO_ATTR, layer.algo)
            target = ConvAlgo.Native
        if layer.algo != target:
            layer.algo = target
            changed += 1
    return changed


@HOOKS.register_module()
class SparseConvAlgoHook(Hook):
    """Calls :func:`set_spconv_algo` for the model's device before training,
    validation and testing, so one config runs on CPU and on GPU."""

    priority = 'VERY_HIGH'

    def _switch(self, runner) -> None:
        n = set_spconv_algo(runner.model)
        if n:
            runner.logger.info(
                f'SparseConvAlgoHook: switched {n} spconv layers for '
                f'{next(runner.model.parameters()).device.type}')

    def before_train(self, runner) -> None:
        self._switch(runner)

    def before_val(self, runner) -> None:
        self._switch(runner)

    def before_test(self, runner) -> None:
        self._switch(runner)
