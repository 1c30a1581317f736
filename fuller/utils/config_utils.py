"""Config loading and rewrites shared by the tools.

References. A config value may be the string ``'${a.b.c}'``: after the whole
inheritance chain and ``--cfg-options`` are merged, ``load_config`` replaces it
by the value at ``a.b.c`` of the final config (so a child that overrides
``a.b.c`` changes every place that refers to it, which mmengine's
``{{_base_.x}}`` cannot do: it substitutes when the base file is read).
``${geometry.<name>}`` reads ``fuller.structures.BEVGeometry(**cfg.geometry)``,
whose derived values (sparse shape, grid sizes, pooling bounds, ...) are
computed, not written in configs. A reference inside a longer string
(``'${data_root}nuscenes_infos_val.pkl'``) is formatted in.
"""
import os.path as osp
import re
from typing import Optional

from mmengine.config import Config, ConfigDict

from ..structures.geometry import BEVGeometry

_REF = re.compile(r'\$\{([A-Za-z_][\w.]*)\}')


def _lookup(root: dict, path: str, where: str):
    node = root
    for part in path.split('.'):
        if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(f'config reference ${{{path}}} at {where}: no {part!r} '
                           f'(available: {sorted(node) if isinstance(node, dict) else node})')
    return node


def resolve_references(cfg: Config) -> Config:
    """Replace every ``'${path}'`` of ``cfg`` in place (see the module doc).

    Raises KeyError naming the reference and the key that holds it, and
    ValueError for a reference cycle.
    """
    tree = cfg._cfg_dict.to_dict()
    roots = dict(tree)
    if 'geometry' in tree:
        roots['geometry'] = BEVGeometry(**tree['geometry']).as_dict()
    active = []

    def value_of(path: str, where: str):
        if path in active:
            raise ValueError(f'config reference cycle: {" -> ".join(active + [path])}')
        active.append(path)
        try:
            return resolve(_lookup(roots, path, where), where)
        finally:
            active.pop()

    def resolve(node, where: str):
        if isinstance(node, dict):
            return {k: resolve(v, f'{where}.{k}' if where else k) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            out = [resolve(v, f'{where}.{i}') for i, v in enumerate(node)]
            return out if isinstance(node, list) else tuple(out)
        if isinstance(node, str) and '${' in node:
            whole = _REF.fullmatch(node)
            if whole:
                return value_of(whole.group(1), where)
            return _REF.sub(lambda m: str(value_of(m.group(1), where)), node)
        return node

    resolved = resolve(tree, '')
    for key, value in resolved.items():
        if value != tree[key]:
            cfg[key] = value
    return cfg


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """``Config.fromfile(path)``, ``cfg_options`` merged, references resolved."""
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return resolve_references(cfg)


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
    launcher, ``--cfg-options`` (merged before the references are resolved,
    so ``geometry.*`` overrides reach every module), ``--data-root`` (on the
    resolved config; the options are merged once more afterwards, so they
    win) and the work dir (default ``work_dirs/<config name>``)."""
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    resolve_references(cfg)
    if data_root is not None:
        set_data_root(cfg, data_root)
        if cfg_options is not None:
            cfg.merge_from_dict(cfg_options)
            resolve_references(cfg)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config_path))[0])
    return cfg
