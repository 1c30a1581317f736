"""Config rewrites shared by the train/test tools."""
import os.path as osp

from mmengine.config import Config, ConfigDict


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
    launcher, ``--data-root``, ``--cfg-options`` (applied last, so they win)
    and the work dir (default ``work_dirs/<config name>``)."""
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
    return cfg
