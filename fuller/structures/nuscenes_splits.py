"""Scene splits per nuScenes version, from the devkit's own scene lists
(used by data preparation and by submission checks; ``fuller.data_prep.splits``
is this module).

=============== ===================== =================================
version         split (ours)          devkit list / ``eval_set`` name
=============== ===================== =================================
v1.0-mini       train, val            mini_train, mini_val
v1.0-trainval   train, val            train, val
v1.0-test       test                  test
=============== ===================== =================================

The devkit is read, never patched. A dataroot may hold only some scenes of a
split (the synthetic dataset, a partial download): pass ``scene_names`` to
keep the split's scenes that are present.
"""
import ast
import functools
import importlib.util
import os.path as osp
import sys
from typing import Dict, Iterable, List, Optional

SPLITS = {
    'v1.0-mini': {'train': 'mini_train', 'val': 'mini_val'},
    'v1.0-trainval': {'train': 'train', 'val': 'val'},
    'v1.0-test': {'test': 'test'},
}


@functools.lru_cache(maxsize=1)
def _devkit_lists() -> Dict[str, List[str]]:
    """The devkit's split lists (``nuscenes.utils.splits``).

    Importing that module imports the whole devkit (~5 s: matplotlib, scipy,
    sklearn), so unless it is loaded already its literal lists are read from
    the installed source with ``ast``; ``train`` is built as the devkit
    builds it (sorted union of train_detect and train_track).
    """
    module = sys.modules.get('nuscenes.utils.splits')
    if module is None:
        spec = importlib.util.find_spec('nuscenes')  # does not import it
        if spec is None or spec.origin is None:
            raise ImportError('nuscenes-devkit is not installed')
        path = osp.join(osp.dirname(spec.origin), 'utils', 'splits.py')
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        found = {node.targets[0].id: ast.literal_eval(node.value)
                 for node in tree.body if isinstance(node, ast.Assign) and
                 len(node.targets) == 1 and
                 isinstance(node.targets[0], ast.Name) and
                 isinstance(node.value, ast.List)}
        names = ('train_detect', 'train_track', 'val', 'test', 'mini_train',
                 'mini_val')
        if all(n in found for n in names):
            found['train'] = sorted(set(found['train_detect'] +
                                        found['train_track']))
            return {n: found[n] for n in ('train', 'val', 'test',
                                          'mini_train', 'mini_val')}
        from nuscenes.utils import splits as module  # unexpected layout
    return dict(train=module.train, val=module.val, test=module.test,
                mini_train=module.mini_train, mini_val=module.mini_val)


def eval_set_name(version: str, split: str) -> str:
    """The devkit's split name (DetectionEval ``eval_set``) of our split.

    Accepts our names ('train', 'val', 'test') and the devkit's own names
    ('mini_train', 'mini_val') for the version.
    """
    if version not in SPLITS:
        raise ValueError(f'unknown nuScenes version {version!r}; expected one '
                         f'of {sorted(SPLITS)}')
    table = SPLITS[version]
    if split in table:
        return table[split]
    if split in table.values():
        return split
    raise ValueError(f'split {split!r} does not exist for {version}; '
                     f'expected one of {sorted(table)}')


def get_split_scenes(version: str, split: str,
                     scene_names: Optional[Iterable[str]] = None) -> List[str]:
    """Scene names of a split, in the devkit's order.

    Args:
        version: 'v1.0-mini', 'v1.0-trainval' or 'v1.0-test'.
        split: 'train', 'val' or 'test' (or the devkit name, e.g.
            'mini_val').
        scene_names: if given, only these scenes are kept (those of the
            dataroot); names that belong to no split of ``version`` raise.
    """
    lists = _devkit_lists()
    scenes = lists[eval_set_name(version, split)]
    if scene_names is None:
        return list(scenes)
    present = set(scene_names)
    known = {s for name in SPLITS[version].values() for s in lists[name]}
    unknown = sorted(present - known)
    if unknown:
        raise ValueError(f'scenes {unknown[:5]} belong to no split of '
                         f'{version}; scene names must come from the devkit '
                         f'lists ({", ".join(SPLITS[version].values())})')
    return [s for s in scenes if s in present]


def split_of_scenes(version: str,
                    scene_names: Iterable[str]) -> Dict[str, List[str]]:
    """Group the scenes of a dataroot by our split names."""
    names = list(scene_names)
    return {split: get_split_scenes(version, split, names)
            for split in SPLITS[version]}
