"""Partial checkpoint loading that says exactly what it did.

mmengine's ``load_from`` loads with ``strict=False``: missing and unexpected
keys are logged as a warning, and a tensor whose shape differs from the
model's is skipped with a warning too, so a wrong checkpoint can start a run
from random weights without stopping it. :func:`load_checkpoint_partial`
loads every key whose name and shape match, lists the keys it loaded, the
model keys it did not find (missing) and the checkpoint keys the model does
not have (unexpected), and raises on a shape mismatch unless the key matches
an explicit allow list of ``fnmatch`` patterns (e.g. ``'heads.det.*'``).

Used by ``PartialCheckpointLoadHook`` (configs; ``tools/train.py
--load-from``) and usable on its own::

    report = load_checkpoint_partial(model, 'lidar_only.pth',
                                     allow_shape_mismatch=['heads.det.*'])
    print(report.summary())
"""
import fnmatch
import json
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import is_model_wrapper
from torch import Tensor, nn

from .io import atomic_open

#: Top-level module names of mmdet3d's projects/BEVFusion ``BEVFusion``
#: detector that fuller's ``MultiTaskBEVFusion`` does not use.
REFERENCE_ONLY_PREFIXES = ('pts_backbone.', 'pts_neck.', 'bbox_head.',
                           'fusion_layer.', 'vtransform.')


class CheckpointShapeMismatchError(ValueError):
    """A checkpoint tensor has a different shape from the model's."""


@dataclass
class LoadReport:
    """What :func:`load_checkpoint_partial` did (all lists sorted).

    Attributes:
        checkpoint: path (or ``'<state dict>'``).
        loaded: model keys set from the checkpoint.
        missing: model keys absent from the checkpoint (left as they were).
        unexpected: checkpoint keys the model does not have (ignored).
        shape_mismatch_allowed: ``{key: {'checkpoint': shape, 'model':
            shape}}`` skipped because the key matched the allow list.
    """
    checkpoint: str
    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shape_mismatch_allowed: Dict[str, Dict[str, List[int]]] = field(
        default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        out['counts'] = {k: len(getattr(self, k)) for k in (
            'loaded', 'missing', 'unexpected', 'shape_mismatch_allowed')}
        return out

    def summary(self, max_keys: int = 20) -> str:
        """Human-readable counts plus the first ``max_keys`` of each list
        (missing keys are grouped by their top-level module first)."""
        lines = [f'load {self.checkpoint}: {len(self.loaded)} loaded, '
                 f'{len(self.missing)} missing, {len(self.unexpected)} '
                 f'unexpected, {len(self.shape_mismatch_allowed)} skipped '
                 'on an allowed shape mismatch']
        for name in ('missing', 'unexpected'):
            keys = getattr(self, name)
            if keys:
                lines.append(f'  {name} by module: {_count_by_module(keys)}')
                shown = ', '.join(keys[:max_keys])
                more = len(keys) - max_keys
                lines.append(f'  {name}: {shown}' +
                             (f', ... (+{more})' if more > 0 else ''))
        for key, shapes in list(self.shape_mismatch_allowed.items())[:max_keys]:
            lines.append(f'  skipped {key}: checkpoint {shapes["checkpoint"]}'
                         f' vs model {shapes["model"]}')
        return '\n'.join(lines)

    def write_json(self, path: str) -> None:
        with atomic_open(path, 'w') as f:
            json.dump(self.to_dict(), f, indent=1)


def _count_by_module(keys: Iterable[str], depth: int = 2) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for key in keys:
        head = '.'.join(key.split('.')[:depth])
        counts[head] = counts.get(head, 0) + 1
    return counts


def extract_state_dict(checkpoint: Union[dict, str],
                       where: str = '<checkpoint>') -> Dict[str, Tensor]:
    """The tensor state dict inside an mmengine/mmdet3d checkpoint (under
    ``state_dict``), or the dict itself when it is already one. A
    ``module.`` prefix on every key (a DDP-wrapped save) is removed. The
    state dict's ``_metadata`` (module versions) is kept."""
    if not isinstance(checkpoint, dict):
        raise TypeError(f'{where}: expected a checkpoint dict, got '
                        f'{type(checkpoint).__name__}')
    state = checkpoint.get('state_dict', checkpoint)
    if not isinstance(state, dict) or not state:
        raise ValueError(f'{where}: no state dict found (keys: '
                         f'{sorted(checkpoint)[:10]})')
    bad = [k for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f'{where}: the state dict holds non-tensor entries '
                         f'{bad[:5]}; is this a checkpoint file?')
    if all(k.startswith('module.') for k in state):
        meta = getattr(state, '_metadata', None)
        state = OrderedDict((k[len('module.'):], v) for k, v in state.items())
        if meta is not None:  # module versions (spconv layout), see below
            state._metadata = OrderedDict(
                (k[len('module.'):] if k.startswith('module.') else k, v)
                for k, v in meta.items())
    return state


def read_checkpoint(path: str, map_location: str = 'cpu') -> dict:
    """``torch.load`` with ``weights_only=True`` (mmengine's own objects are
    allow-listed by ``fuller.compat``); a missing file raises naming it."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint {path!r} does not exist')
    from fuller.compat import register_checkpoint_safe_globals
    register_checkpoint_safe_globals()
    return torch.load(path, map_location=map_location, weights_only=True)


def _matches(key: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in patterns)


def _check_not_reference_layout(keys: Iterable[str], where: str) -> None:
    found = sorted({p for k in keys for p in REFERENCE_ONLY_PREFIXES
                    if k.startswith(p)})
    if found:
        raise ValueError(
            f'{where}: keys start with {found}, the module names of mmdet3d\'s '
            'projects/BEVFusion. Its sparse-conv kernels and BEV maps use '
            'another axis order, so loading by name would be wrong; convert '
            'it first: python tools/convert_checkpoint.py IN.pth OUT.pth')


def load_checkpoint_partial(
        model: nn.Module,
        checkpoint: Union[str, dict],
        allow_shape_mismatch: Sequence[str] = (),
        map_location: str = 'cpu',
        report_path: Optional[str] = None) -> LoadReport:
    """Load the keys of ``checkpoint`` that the model has, with a report.

    Args:
        model: the model (DDP wrappers are unwrapped).
        checkpoint: a path, a checkpoint dict or a state dict.
        allow_shape_mismatch: ``fnmatch`` patterns of model keys that may
            differ in shape; those keys are skipped (kept as initialised) and
            listed in ``report.shape_mismatch_allowed``. Any other shape
            mismatch raises :class:`CheckpointShapeMismatchError` naming every
            mismatching key and both shapes, before anything is loaded.
        map_location: passed to ``torch.load``.
        report_path: if given, the report is also written there as JSON.

    Returns:
        The :class:`LoadReport`.

    Raises:
        CheckpointShapeMismatchError: see ``allow_shape_mismatch``.
        ValueError: the checkpoint shares no key with the model, or follows
            the mmdet3d projects/BEVFusion names (convert it first).
    """
    where = checkpoint if isinstance(checkpoint, str) else '<state dict>'
    ckpt = read_checkpoint(checkpoint, map_location) \
        if isinstance(checkpoint, str) else checkpoint
    state = extract_state_dict(ckpt, where)
    _check_not_reference_layout(state, where)
    if is_model_wrapper(model):
        model = model.module
    own = model.state_dict()
    common = sorted(set(state) & set(own))
    if not common:
        raise ValueError(f'{where}: none of its {len(state)} keys (e.g. '
                         f'{sorted(state)[:3]}) is a key of the model (e.g. '
                         f'{sorted(own)[:3]})')
    report = LoadReport(checkpoint=str(where),
                        missing=sorted(set(own) - set(state)),
                        unexpected=sorted(set(state) - set(own)))
    refused: List[Tuple[str, list, list]] = []
    to_load = {}
    for key in common:
        ckpt_shape, own_shape = list(state[key].shape), list(own[key].shape)
        if ckpt_shape == own_shape:
            to_load[key] = state[key]
        elif _matches(key, allow_shape_mismatch):
            report.shape_mismatch_allowed[key] = dict(checkpoint=ckpt_shape,
                                                      model=own_shape)
        else:
            refused.append((key, ckpt_shape, own_shape))
    if refused:
        lines = '\n'.join(f'  {k}: checkpoint {a} vs model {b}'
                          for k, a, b in refused)
        raise CheckpointShapeMismatchError(
            f'{where}: {len(refused)} tensors differ in shape from the '
            f'model:\n{lines}\nNothing was loaded. If this is intended (e.g. '
            'a head of another size), allow those keys explicitly with '
            'allow_shape_mismatch=[patterns], e.g. '
            f'{sorted({k.rsplit(".", 2)[0] + ".*" for k, _, _ in refused})[:3]}')
    # Tensors are in the layout of the model's own state dict (shapes were
    # checked against it). Give them its metadata: mmdet3d's spconv 2 layers
    # otherwise treat a dict without ``_metadata`` as spconv-1 kernels and
    # permute them.
    to_load = OrderedDict(to_load)
    to_load._metadata = getattr(own, '_metadata', OrderedDict())
    result = model.load_state_dict(to_load, strict=False)
    # what torch reports must be what we computed
    expected_missing = set(report.missing) | set(report.shape_mismatch_allowed)
    if set(result.missing_keys) != expected_missing or result.unexpected_keys:
        raise RuntimeError(f'{where}: load_state_dict disagrees with the '
                           f'computed report (missing {result.missing_keys[:5]}'
                           f', unexpected {result.unexpected_keys[:5]})')
    report.loaded = sorted(to_load)
    if report_path is not None:
        report.write_json(report_path)
    return report


def _is_local_path(path: str) -> bool:
    return '://' not in path and not path.startswith(('torchvision:',
                                                      'open-mmlab:',
                                                      'mmcls:', 'pavi:'))


def check_init_checkpoints(model: nn.Module,
                           hint: Optional[str] = None) -> List[str]:
    """Check the local files named by ``init_cfg['checkpoint']`` of every
    submodule (``Pretrained`` inits, mmdet's SwinTransformer) exist.

    Returns the checked paths; raises ``FileNotFoundError`` naming the module,
    the path and ``hint`` for the first missing one. URLs and ``scheme://``
    names (downloaded by mmengine) are not checked.
    """
    if is_model_wrapper(model):
        model = model.module
    checked = []
    for name, module in model.named_modules():
        cfgs = getattr(module, 'init_cfg', None)
        cfgs = cfgs if isinstance(cfgs, (list, tuple)) else [cfgs]
        for cfg in cfgs:
            path = cfg.get('checkpoint') if isinstance(cfg, dict) else None
            if not isinstance(path, str) or not _is_local_path(path):
                continue
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f'{name or "model"}: init_cfg.checkpoint {path!r} does '
                    'not exist (relative paths are relative to '
                    f'{os.getcwd()}).' + (f' {hint}' if hint else ''))
            checked.append(path)
    return checked


def use_partial_loading(cfg, checkpoint: str,
                        allow_shape_mismatch: Optional[Sequence[str]] = None
                        ) -> dict:
    """Make a run load ``checkpoint`` through ``PartialCheckpointLoadHook``
    (what ``tools/train.py --load-from`` does) instead of mmengine's silent
    ``load_from``.

    Updates the hook already in ``cfg.custom_hooks`` (keeping its allow list
    unless ``allow_shape_mismatch`` is given) or appends one, and sets
    ``cfg.load_from = None``. Returns the hook config.
    """
    hooks = list(cfg.get('custom_hooks', None) or [])
    hook = next((h for h in hooks
                 if h.get('type') == 'PartialCheckpointLoadHook'), None)
    if hook is None:
        hook = dict(type='PartialCheckpointLoadHook')
        hooks.append(hook)
    hook['checkpoint'] = checkpoint
    if allow_shape_mismatch is not None:
        hook['allow_shape_mismatch'] = list(allow_shape_mismatch)
    cfg.custom_hooks = hooks
    cfg.load_from = None
    return hook
