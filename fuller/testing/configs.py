"""User configs for tests: a child of a shipped config pointed at another
dataroot, written the way an mmdet3d user writes one (plain mmengine
inheritance: the datasets and the nuScenes metric restate ``data_root``)."""
from pathlib import Path
from typing import Union


def write_user_config(path: Union[str, Path], base: Union[str, Path],
                      data_root: Union[str, Path], extra: str = '') -> str:
    """Write ``path``: ``_base_ = [base]`` with every dataset and the
    nuScenes evaluators reading ``data_root``, then the config text
    ``extra``. For configs whose train dataset is not wrapped (the tiny
    ones; a ``CBGSDataset`` nests it one level deeper). Returns the path as
    a string."""
    root = str(data_root).rstrip('/') + '/'
    text = f"""_base_ = [{str(base)!r}]
data_root = {root!r}
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = [
    dict(_base_.val_evaluator[0], data_root=data_root,
         ann_file=data_root + 'nuscenes_infos_val.pkl'),
    _base_.val_evaluator[1],
]
test_evaluator = val_evaluator
"""
    Path(path).write_text(text + extra)
    return str(path)
