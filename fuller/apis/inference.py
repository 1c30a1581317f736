"""Inference on one sample, as ``mmdet3d.apis`` does it for its detectors.

Shape shorthand: M predicted boxes, C map classes, Y/X map rows/columns,
N cameras.

Frames: boxes and masks are in the sample's keyframe ``lidar`` frame (the
test pipeline of fuller's configs does not augment), the frame of the info's
ground-truth boxes and of the cached map masks.

Typical use::

    from mmdet3d.apis import init_model          # or fuller.apis.init_model
    from fuller.apis import inference_multitask, load_info
    model = init_model(CONFIG, CHECKPOINT, device='cpu')
    result = inference_multitask(model, load_info('data/x/nuscenes_infos_val.pkl', 0))
    result.bboxes_3d, result.scores_3d, result.labels_3d, result.map_probs

A sample is an info entry of ``tools/create_data.py`` (mmdet3d's v2 info
format with fuller's camera matrices), or one built from file paths by
:func:`sample_from_files`. It goes through the config's test pipeline
without its ground-truth loaders, then ``model.test_step``: exactly what
``tools/test.py`` does for that sample.
"""
import copy
import os.path as osp
import pickle
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..structures.frames import BEVGrid
from ..utils.config_utils import check_config_consistency

# pipeline steps that read ground truth; a sample to predict may have none
GT_STEPS = ('LoadAnnotations3D', 'LoadBEVMapMasks')
GT_KEYS = ('gt_bboxes_3d', 'gt_labels_3d', 'gt_masks_bev')


@dataclass
class MultiTaskResult:
    """Predictions for one sample.

    Attributes:
        bboxes_3d: mmdet3d ``LiDARInstance3DBoxes`` (M boxes; tensor (M, 9):
            x, y, z of the bottom centre (m), dx, dy, dz (m), yaw (rad, from
            +x towards +y), vx, vy (m/s)) in the keyframe LiDAR frame; empty
            without a detection head.
        scores_3d: (M,) float scores.
        labels_3d: (M,) long class indices into ``class_names``.
        class_names: the detection classes, in label order.
        map_probs: (C, Y, X) float probabilities of the map classes on
            ``map_grid`` (row = y, column = x), or None without a map head.
        map_classes: names of the C map channels, or None.
        map_grid: the masks' ``BEVGrid`` (LiDAR frame), or None.
        token: the sample token.
        data_sample: the model's ``Det3DDataSample`` itself.
    """
    bboxes_3d: object
    scores_3d: torch.Tensor
    labels_3d: torch.Tensor
    class_names: Tuple[str, ...]
    map_probs: Optional[torch.Tensor]
    map_classes: Optional[Tuple[str, ...]]
    map_grid: Optional[BEVGrid]
    token: Optional[str]
    data_sample: object


def init_model(config, checkpoint: Optional[str] = None, device: str = 'cpu',
               cfg_options: Optional[dict] = None):
    """``mmdet3d.apis.init_model`` after fuller's config check
    (``check_config_consistency``): the model of ``config`` (a path or a
    ``Config``) with the weights of ``checkpoint``, in eval mode on
    ``device``."""
    from mmdet3d.apis import init_model as mmdet3d_init_model
    from mmengine.config import Config

    import fuller  # noqa: F401  (registers fuller's modules)
    if not isinstance(config, Config):
        config = Config.fromfile(str(config))
    if cfg_options:
        config.merge_from_dict(cfg_options)
    check_config_consistency(config)
    return mmdet3d_init_model(config, checkpoint, device=device)


def load_info(ann_file: str, index_or_token: Union[int, str]) -> dict:
    """One info entry of an info pkl (``tools/create_data.py``), by index
    or sample token."""
    with open(ann_file, 'rb') as f:
        infos = pickle.load(f)['data_list']
    if isinstance(index_or_token, int):
        return infos[index_or_token]
    for info in infos:
        if info.get('token') == index_or_token:
            return info
    raise KeyError(f'{ann_file}: no sample with token {index_or_token!r}')


def sample_from_files(lidar_path: str, image_paths: Mapping[str, str],
                      calibration: Mapping, *, token: str = 'sample',
                      timestamp: float = 0.0,
                      sweeps: Sequence[Mapping] = ()) -> dict:
    """An info entry for raw files.

    Args:
        lidar_path: the keyframe LiDAR sweep (``.bin``: float32 x, y, z,
            intensity, ring per point, in the LiDAR frame).
        image_paths: camera name (``CAM_FRONT``...) -> image file, one per
            camera of the model.
        calibration: ``lidar2ego`` (4x4) and, per camera name, a dict with
            ``cam2img`` (3x3 intrinsics), ``lidar2cam`` (4x4) and ``cam2ego``
            (4x4); optional ``ego2global`` (4x4, default identity).
        token, timestamp: the sample's token and time (s).
        sweeps: earlier sweeps in the info format (``lidar_points`` with
            ``lidar_path`` and ``lidar2sensor``, ``timestamp``); optional.
            mmdet3d's info parsing keeps only a sweep's file name and reads it
            from the config's ``data_prefix.sweeps`` folder.
    """
    missing = [c for c in image_paths if c not in calibration]
    if missing:
        raise KeyError(f'calibration has no entry for the cameras {missing}')
    images = {}
    for cam, path in image_paths.items():
        cal = calibration[cam]
        images[cam] = dict(img_path=osp.abspath(path),
                           cam2img=np.asarray(cal['cam2img'], np.float64).tolist(),
                           lidar2cam=np.asarray(cal['lidar2cam'], np.float64).tolist(),
                           cam2ego=np.asarray(cal['cam2ego'], np.float64).tolist())
    return dict(
        token=token, sample_idx=0, timestamp=float(timestamp),
        ego2global=np.asarray(calibration.get('ego2global', np.eye(4)),
                              np.float64).tolist(),
        lidar_points=dict(lidar_path=osp.abspath(lidar_path), num_pts_feats=5,
                          lidar2ego=np.asarray(calibration['lidar2ego'],
                                               np.float64).tolist()),
        lidar_sweeps=[copy.deepcopy(dict(s)) for s in sweeps],
        images=images, instances=[])


def _prediction_pipeline(pipeline: Sequence[dict]) -> list:
    """The test pipeline without its ground-truth steps and keys."""
    steps = []
    for step in copy.deepcopy(list(pipeline)):
        if step['type'] in GT_STEPS:
            continue
        if 'keys' in step and step['type'].endswith('Inputs'):
            step['keys'] = [k for k in step['keys'] if k not in GT_KEYS]
        steps.append(step)
    return steps


def build_sample_parser(cfg, loader: str = 'test_dataloader'):
    """The dataset of ``cfg.<loader>`` without its info file (lazy init) and
    with the prediction pipeline: ``parser.parse_data_info(info)`` then
    ``parser.pipeline(...)`` prepares one sample as that dataloader does."""
    from mmdet3d.registry import DATASETS
    from mmengine.registry import init_default_scope

    import fuller  # noqa: F401
    init_default_scope(cfg.get('default_scope', 'mmdet3d'))
    ds_cfg = copy.deepcopy(cfg[loader]['dataset'])
    while ds_cfg.get('type') in ('CBGSDataset', 'ClassBalancedDataset',
                                 'RepeatDataset'):
        ds_cfg = ds_cfg['dataset']
    ds_cfg.update(lazy_init=True, test_mode=True, load_eval_anns=False,
                  with_map=False,
                  pipeline=_prediction_pipeline(ds_cfg['pipeline']))
    return DATASETS.build(ds_cfg)


@torch.no_grad()
def inference_multitask(model, sample: Mapping, parser=None
                        ) -> MultiTaskResult:
    """Boxes and map masks of one sample (see :class:`MultiTaskResult`).

    Args:
        model: from ``init_model`` (``model.cfg`` gives the test pipeline).
        sample: an info entry (``load_info``) or :func:`sample_from_files`;
            not modified.
        parser: reuse a :func:`build_sample_parser` result across samples.
    """
    from mmengine.dataset import pseudo_collate

    if parser is None:
        parser = build_sample_parser(model.cfg)
    info = parser.parse_data_info(copy.deepcopy(dict(sample)))
    data = parser.pipeline(info)
    out = model.test_step(pseudo_collate([data]))[0]
    inst = out.pred_instances_3d
    class_names = tuple((getattr(model, 'dataset_meta', None) or {}).get(
        'classes', parser.metainfo['classes']))
    map_probs = map_classes = map_grid = None
    heads = getattr(model, 'heads', {})
    if 'pred_masks_bev' in out and 'seg' in heads:
        map_probs = out.pred_masks_bev.float().cpu()
        map_classes = tuple(heads['seg'].classes)
        map_grid = heads['seg'].map_grid
    return MultiTaskResult(
        bboxes_3d=inst.bboxes_3d.to('cpu'), scores_3d=inst.scores_3d.cpu(),
        labels_3d=inst.labels_3d.cpu(), class_names=class_names,
        map_probs=map_probs, map_classes=map_classes, map_grid=map_grid,
        token=out.metainfo.get('token'), data_sample=out)


__all__ = ['MultiTaskResult', 'init_model', 'inference_multitask',
           'load_info', 'sample_from_files', 'build_sample_parser',
           'GT_STEPS']
