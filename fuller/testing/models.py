"""Models built from configs the one way tests, tools and benchmarks need.

:func:`build_model_from_config` turns a config (a path, a loaded
``Config`` with a ``model`` key, or the model dict itself) into a model with
random weights: every ``Pretrained`` ``init_cfg`` removed (no checkpoint
download), the torch RNG seeded before building, and ``init_weights`` run
with mmengine's logger held at WARNING (it logs every parameter at INFO).
"""
import copy
from pathlib import Path
from typing import Mapping, Optional, Union

import torch
from mmengine.config import Config, ConfigDict
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from torch import nn

from ..utils.config_utils import load_config

ConfigLike = Union[str, Path, Config, Mapping]


def _load_config(path: Union[str, Path]) -> Config:
    """The one place this module reads a config file."""
    return load_config(str(path))


def load_model_cfg(config: ConfigLike) -> ConfigDict:
    """-> a deep copy of the model config of ``config``: a file path, a
    config holding ``model``, or a model config (a dict with ``type``)."""
    if isinstance(config, (str, Path)):
        config = _load_config(config)
    model_cfg = config['model'] if 'model' in config else config
    return ConfigDict(copy.deepcopy(dict(model_cfg)))


def drop_pretrained_init(cfg):
    """Set every ``init_cfg`` of type ``Pretrained`` in the nested config
    ``cfg`` (dicts and lists, in place) to None; other init_cfgs stay.
    Returns ``cfg``."""
    if isinstance(cfg, Mapping):
        init = cfg.get('init_cfg')
        inits = init if isinstance(init, (list, tuple)) else [init]
        if any(isinstance(i, Mapping) and i.get('type') == 'Pretrained'
               for i in inits):
            cfg['init_cfg'] = None
        for value in cfg.values():
            drop_pretrained_init(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            drop_pretrained_init(value)
    return cfg


def quiet_init_weights(model: nn.Module) -> None:
    """``model.init_weights()`` with mmengine's logger at WARNING."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)


def build_model_from_config(config: ConfigLike, *, seed: int = 0,
                            init_weights: bool = True,
                            pretrained: bool = False,
                            model_overrides: Optional[Mapping] = None,
                            device: Union[str, torch.device, None] = None
                            ) -> nn.Module:
    """Build the model of ``config`` in the mmdet3d scope.

    Args:
        config: a config file path, a loaded config with ``model``, or a
            model config; never modified.
        seed: ``torch.manual_seed`` before building; None leaves the RNG.
        init_weights: run ``init_weights`` (quietly).
        pretrained: keep ``Pretrained`` init_cfgs (may download).
        model_overrides: top-level model keys replaced as a whole (not
            merged), e.g. ``dict(grad_calibrator=None)``.
        device: move the model there; None leaves it on the CPU.

    Returns the model in training mode, as ``MODELS.build`` leaves it.
    """
    import fuller  # noqa: F401  (registers fuller's modules)
    from mmdet3d.registry import MODELS
    init_default_scope('mmdet3d')
    model_cfg = load_model_cfg(config)
    for key, value in (model_overrides or {}).items():
        model_cfg[key] = copy.deepcopy(value)  # ConfigDict.update merges
    if not pretrained:
        drop_pretrained_init(model_cfg)
    if seed is not None:
        torch.manual_seed(seed)
    model = MODELS.build(model_cfg)
    if init_weights:
        quiet_init_weights(model)
    return model if device is None else model.to(device)
