"""Config loading, the geometry/channel consistency check, and the rewrites
shared by the tools.

fuller's configs are plain mmengine configs: every value a module or
transform receives is written in the files, so ``Config.fromfile`` +
``MODELS.build`` / ``Runner.from_cfg``, mmdet3d's own ``tools/train.py`` /
``tools/test.py`` and ``mmdet3d.apis.init_model`` work on them unchanged.

Declared values. A config declares its geometry once,
``geometry = dict(point_cloud_range=..., voxel_size=..., lidar_stride=...,
image_size=..., image_stride=..., lss_upsample=..., map_grid=...)``
(``fuller.structures.BEVGeometry``), and the channel counts modules hand each
other, ``channels = dict(image_features=..., camera_bev=..., lidar_bev=...,
shared_in=..., shared=...)``. Every value that follows from them (the sparse
shape, the view transform's pooling bounds, the heads' grids and input
channels, the pipeline's range filters, image size and map grid, ...) is
also written where it is used, and :func:`check_config_consistency`
recomputes each of them (:data:`DEPENDENT_KEYS` says which key of which
module type follows which declared value) and raises one
:class:`ConfigConsistencyError` that lists every key that disagrees, with its
config file. The check runs in fuller's tools, in fuller's inference API,
under a plain ``Runner`` through ``ConfigCheckHook`` (a default hook of
``configs/_base_/default_runtime.py``, before the first iteration of
train/val/test) and in a test over every shipped config. So a child config
or ``--cfg-options`` that changes ``geometry`` without the keys that depend
on it fails with that list instead of silently training a mismatched model.
:func:`dependent_values` / :func:`sync_dependent_values` (and
``tools/misc/sync_config.py``) compute those keys from the declared values,
so changing the geometry stays one edit plus one command.

The data settings follow mmdet3d's convention: ``data_root`` and ``modality``
are variables used by value in the file that defines them; a config that
changes them restates the datasets and evaluators, and the check also
requires every dataset and nuScenes evaluator to agree with them.

Strings of the former ``'${a.b}'`` reference syntax are refused with the
key that holds them.
"""
import copy
import math
import os.path as osp
from collections import OrderedDict
from typing import Dict, Iterator, List, Optional, Tuple

from mmengine.config import Config, ConfigDict

from ..structures.geometry import BEVGeometry, as_bev_grid

# module type -> {parameter (dotted inside the module's dict): declared value}.
# A declared value is 'geometry.<name>' (``BEVGeometry(**cfg.geometry).as_dict()``),
# 'channels.<name>', or a list of those. Types are matched without a scope
# prefix ('mmdet3d.CenterHead' is 'CenterHead').
_VIEW_TRANSFORM = {
    'in_channels': 'channels.image_features',
    'out_channels': 'channels.camera_bev',
    'image_size': 'geometry.image_size',
    'feature_size': 'geometry.feature_size',
    'xbound': 'geometry.xbound',
    'ybound': 'geometry.ybound',
    'downsample': 'geometry.lss_upsample',
}
_RANGE_FILTER = {'point_cloud_range': 'geometry.point_cloud_range'}
DEPENDENT_KEYS: Dict[str, Dict[str, object]] = {
    # model
    'MultiModalDataPreprocessor': {
        'voxel_layer.point_cloud_range': 'geometry.point_cloud_range',
        'voxel_layer.voxel_size': 'geometry.voxel_size',
    },
    'GeneralizedLSSFPN': {'out_channels': 'channels.image_features'},
    'LSSViewTransform': _VIEW_TRANSFORM,
    'DepthLSSViewTransform': _VIEW_TRANSFORM,
    'SparseEncoder': {'sparse_shape': 'geometry.sparse_shape'},
    'ConvFuser': {'in_channels': ['channels.camera_bev', 'channels.lidar_bev'],
                  'out_channels': 'channels.shared_in'},
    'BEVDecoder': {'backbone.in_channels': 'channels.shared_in'},
    'TransFusionDetHead': {'in_channels': 'channels.shared',
                           'input_grid': 'geometry.bev_grid'},
    'BEVMapSegHead': {'in_channels': 'channels.shared',
                      'input_grid': 'geometry.bev_grid',
                      'map_grid': 'geometry.map_grid'},
    'CenterHead': {
        'in_channels': 'channels.shared',
        'bbox_coder.pc_range': 'geometry.point_cloud_range',
        'bbox_coder.voxel_size': 'geometry.voxel_size',
        'bbox_coder.out_size_factor': 'geometry.lidar_stride',
        'train_cfg.grid_size': 'geometry.grid_size',
        'train_cfg.voxel_size': 'geometry.voxel_size',
        'train_cfg.out_size_factor': 'geometry.lidar_stride',
        'train_cfg.point_cloud_range': 'geometry.point_cloud_range',
        'test_cfg.pc_range': 'geometry.point_cloud_range',
        'test_cfg.voxel_size': 'geometry.voxel_size',
        'test_cfg.out_size_factor': 'geometry.lidar_stride',
    },
    # data pipelines
    'PointsRangeFilter': _RANGE_FILTER,
    'ObjectRangeFilter': _RANGE_FILTER,
    'ImageAug3D': {'final_dim': 'geometry.image_size'},
    'LoadBEVMapMasks': {'x_range': 'geometry.map_x_range',
                        'y_range': 'geometry.map_y_range',
                        'cell_size': 'geometry.map_cell_size'},
}
# the parts of a config that are built; top-level helper variables
# (``train_pipeline``, ...) are not, so they are not checked
BUILT_KEYS = ('model', 'train_dataloader', 'val_dataloader', 'test_dataloader',
              'val_evaluator', 'test_evaluator')
_GRID_KEYS = {'x_range', 'y_range', 'cell_size'}
_REFERENCE = '${'


class ConfigConsistencyError(ValueError):
    """A config's values disagree with its declared geometry / channels /
    data settings, or it holds an unresolvable ``'${...}'`` string."""


# ----------------------------------------------------------------- walking
def _type_name(node) -> Optional[str]:
    kind = node.get('type') if isinstance(node, dict) else None
    if isinstance(kind, type):
        return kind.__name__
    return kind.rsplit('.', 1)[-1] if isinstance(kind, str) else None


def _walk(node, path: str) -> Iterator[Tuple[str, object]]:
    """(dotted path, node) for ``node`` and everything below it; list items
    get their index, as ``--cfg-options`` writes them."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f'{path}.{key}' if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f'{path}.{i}')


def _get(node, dotted: str):
    """The value at ``dotted`` below ``node``; KeyError when absent."""
    for part in dotted.split('.'):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and \
                int(part) < len(node):
            node = node[int(part)]
        else:
            raise KeyError(dotted)
    return node


def _set(root, dotted: str, value) -> None:
    parts = dotted.split('.')
    node = _get(root, '.'.join(parts[:-1])) if len(parts) > 1 else root
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _plain(value):
    """ConfigDicts and tuples as plain dicts and lists (for comparing and
    printing)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _same(actual, expected) -> bool:
    """Equal as numbers (to float rounding), lists, dicts or BEV grids."""
    if isinstance(expected, dict) and set(expected) == _GRID_KEYS:
        try:
            a, e = as_bev_grid(_plain(actual)), as_bev_grid(expected)
        except (TypeError, ValueError, KeyError):
            return False
        return _same(list(a.x_range) + list(a.y_range) + list(a.cell_size),
                     list(e.x_range) + list(e.y_range) + list(e.cell_size))
    if isinstance(expected, (list, tuple)):
        return isinstance(actual, (list, tuple)) and \
            len(actual) == len(expected) and \
            all(_same(a, e) for a, e in zip(actual, expected))
    if isinstance(expected, bool) or isinstance(actual, bool):
        return actual is expected
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        return math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9)
    return actual == expected


# --------------------------------------------------------- declared values
def declared_values(cfg) -> Dict[str, object]:
    """``{'geometry.<name>': value, 'channels.<name>': value}``: the
    geometry's declared and derived values (``BEVGeometry.as_dict``) and the
    channel counts; empty for a config that declares neither.

    Raises ConfigConsistencyError naming the config file when ``geometry``
    does not make whole grids."""
    values = {}
    geometry = cfg.get('geometry')
    if geometry is not None:
        try:
            derived = BEVGeometry(**_plain(geometry)).as_dict()
        except (TypeError, ValueError) as err:
            raise ConfigConsistencyError(
                f'{_source(cfg)}: geometry = {_plain(geometry)} is not a valid '
                f'BEVGeometry: {err}') from err
        values.update({f'geometry.{k}': v for k, v in derived.items()})
    for name, value in (cfg.get('channels') or {}).items():
        values[f'channels.{name}'] = value
    return values


def _expected(source, declared: dict):
    if isinstance(source, list):
        return [_expected(s, declared) for s in source]
    return declared[source]


def _sources_present(source, declared: dict) -> bool:
    if isinstance(source, list):
        return all(_sources_present(s, declared) for s in source)
    return source in declared


def _dependent_entries(cfg) -> List[Tuple[str, object, object, str]]:
    """(key path, value in the config, value the declarations give, source)
    for every dependent key present in the built parts of ``cfg``."""
    declared = declared_values(cfg)
    entries = []
    for top in BUILT_KEYS:
        if top not in cfg:
            continue
        for path, node in _walk(cfg[top], top):
            rules = DEPENDENT_KEYS.get(_type_name(node) or '')
            if not rules:
                continue
            for param, source in rules.items():
                if not _sources_present(source, declared):
                    continue
                try:
                    actual = _get(node, param)
                except KeyError:
                    continue  # the module's default; nothing written to check
                entries.append((f'{path}.{param}', actual,
                                _expected(source, declared),
                                source if isinstance(source, str) else
                                '[' + ', '.join(source) + ']'))
    entries += _data_entries(cfg)
    return entries


def _data_entries(cfg) -> List[Tuple[str, object, object, str]]:
    """``data_root`` and ``modality``: every dataset (wrappers included) and
    every nuScenes evaluator uses the config's values."""
    entries = []
    for name in ('data_root', 'modality'):
        if cfg.get(name) is None:
            continue
        expected = _plain(cfg[name])
        for top in BUILT_KEYS:
            if top not in cfg or top == 'model':
                continue
            for path, node in _walk(cfg[top], top):
                is_dataset = isinstance(node, dict) and (
                    path.endswith('.dataset') or top.endswith('_evaluator'))
                if is_dataset and name in node and (
                        _type_name(node) != 'BEVMapIoUMetric'):
                    entries.append((f'{path}.{name}', node[name], expected, name))
    return entries


def _source(cfg) -> str:
    return getattr(cfg, 'filename', None) or '<config without a file>'


# ------------------------------------------------------------------ public
def dependent_values(cfg) -> 'OrderedDict[str, object]':
    """Every dependent key of ``cfg`` (``--cfg-options`` syntax) with the
    value its declared geometry / channels / data settings give; pass it to
    :func:`sync_dependent_values` or print it."""
    return OrderedDict((path, copy.deepcopy(expected))
                       for path, _, expected, _ in _dependent_entries(cfg))


def config_disagreements(cfg) -> List[Tuple[str, object, object, str]]:
    """``[(key, value in the config, value the declarations give, declared
    source)]`` for every dependent key that disagrees."""
    return [(path, _plain(actual), expected, src)
            for path, actual, expected, src in _dependent_entries(cfg)
            if not _same(_plain(actual), expected)]


def find_references(cfg) -> List[Tuple[str, str]]:
    """``[(key, string)]`` of every string value holding ``'${'``."""
    tree = cfg.to_dict() if isinstance(cfg, Config) else cfg
    return [(path, node) for path, node in _walk(_plain(tree), '')
            if isinstance(node, str) and _REFERENCE in node]


def check_config_consistency(cfg) -> None:
    """Raise one :class:`ConfigConsistencyError` naming the config file and
    listing each key that holds a ``'${...}'`` string or disagrees with
    the declared ``geometry`` / ``channels`` / ``data_root`` / ``modality``
    (key, its value, the declared value it must follow, the value that
    gives). Returns None for a consistent config."""
    lines = []
    for path, text in find_references(cfg):
        lines.append(f'  {path} = {text!r}: fuller configs hold values, not '
                     "'${...}' references; write the value (python "
                     'tools/misc/sync_config.py CONFIG prints the values '
                     'derived from geometry and channels)')
    if not lines:
        for path, actual, expected, src in config_disagreements(cfg):
            lines.append(f'  {path} = {actual}, but {src} gives {expected}')
    if lines:
        raise ConfigConsistencyError(
            f'{_source(cfg)}: {len(lines)} key(s) disagree with the declared '
            'geometry / channels / data settings (a child config or '
            '--cfg-options changed one without the keys that follow it):\n' +
            '\n'.join(lines) + '\nSet these keys too (python '
            'tools/misc/sync_config.py CONFIG [--cfg-options ...] prints or '
            'writes them), or revert the declared value.')


def sync_dependent_values(cfg: Config) -> Config:
    """Set every dependent key of ``cfg`` to the value its declared
    geometry / channels / data settings give, in place; returns ``cfg``."""
    if find_references(cfg):
        check_config_consistency(cfg)  # names the reference strings
    values = dependent_values(cfg)
    tree = cfg._cfg_dict
    for path, value in values.items():
        _set(tree, path, ConfigDict(value) if isinstance(value, dict) else value)
    return cfg


def load_config(path: str, cfg_options: Optional[dict] = None, *,
                sync: bool = False) -> Config:
    """``Config.fromfile(path)`` with ``cfg_options`` merged, then checked by
    :func:`check_config_consistency`. ``sync=True`` first rewrites the
    dependent keys from the declared values (for an override of
    ``geometry.*`` / ``channels.*``; what tools/misc/sync_config.py does)."""
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if sync:
        sync_dependent_values(cfg)
    check_config_consistency(cfg)
    return cfg


# ------------------------------------------------------------ tool helpers
def _datasets(loader_cfg):
    """Every dataset dict of a dataloader config, wrappers included."""
    dataset = loader_cfg.get('dataset') if loader_cfg else None
    while dataset is not None:
        yield dataset
        dataset = dataset.get('dataset')


def set_data_root(cfg: Config, data_root: str) -> None:
    """Point every dataloader and nuScenes evaluator of ``cfg`` at
    ``data_root`` (a dataroot holding the tables and the infos of
    tools/create_data.py), in place."""
    root = data_root.rstrip('/') + '/'
    cfg.data_root = root
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        for dataset in _datasets(cfg.get(key)):
            if 'data_root' in dataset:
                dataset.data_root = root
    for key in ('val_evaluator', 'test_evaluator'):
        evaluators = cfg.get(key)
        if evaluators is None:
            continue
        if isinstance(evaluators, (dict, ConfigDict)):
            evaluators = [evaluators]
        for ev in evaluators:
            if 'data_root' in ev:
                ev.data_root = root
            if ev.get('ann_file'):
                ev.ann_file = osp.join(root, osp.basename(ev.ann_file))


def apply_cli_overrides(cfg: Config, config_path: str, *, launcher: str,
                        data_root=None, cfg_options=None,
                        work_dir=None) -> Config:
    """What tools/train.py and tools/test.py both do with their arguments:
    launcher, ``--data-root``, ``--cfg-options`` (merged last, so they win)
    and the work dir (default ``work_dirs/<config name>``); then
    :func:`check_config_consistency`, as ``ConfigCheckHook`` does under
    mmdet3d's tools."""
    cfg.launcher = launcher
    if data_root is not None:
        set_data_root(cfg, data_root)
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config_path))[0])
    check_config_consistency(cfg)
    return cfg


__all__ = [
    'DEPENDENT_KEYS', 'ConfigConsistencyError', 'declared_values',
    'dependent_values', 'config_disagreements', 'find_references',
    'check_config_consistency', 'sync_dependent_values', 'load_config',
    'set_data_root', 'apply_cli_overrides'
]
