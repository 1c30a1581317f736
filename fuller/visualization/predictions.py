"""Run a trained model on a few samples of a config's dataset for pictures.

Shape shorthand: M boxes, C map classes, Y/X map rows/columns.

The test pipeline of fuller's configs applies no LiDAR augmentation, so the
predicted boxes and map masks are in the keyframe ``lidar`` frame, the frame
of the info's GT boxes and cached map masks.
"""
from typing import Dict, Optional, Sequence

import numpy as np
import torch

from .sample_view import BoxSet


def build_model(cfg, checkpoint: str, device: str = 'cpu'):
    """The model of ``cfg`` with the weights of ``checkpoint``, eval mode."""
    from mmengine.runner import load_checkpoint

    from mmdet3d.registry import MODELS
    from mmdet3d.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    import fuller  # noqa: F401  (registers fuller's modules)
    model = MODELS.build(cfg.model)
    load_checkpoint(model, checkpoint, map_location=device, logger='silent')
    return model.to(device).eval()


def build_dataset(cfg, ann_file: Optional[str] = None,
                  loader: str = 'test_dataloader'):
    """The dataset of ``cfg.<loader>`` (optionally with another info file)."""
    import copy

    from mmdet3d.registry import DATASETS
    from mmdet3d.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    import fuller  # noqa: F401
    ds_cfg = copy.deepcopy(cfg[loader]['dataset'])
    if ann_file is not None:
        ds_cfg['ann_file'] = ann_file
    return DATASETS.build(ds_cfg)


def index_by_token(dataset) -> Dict[str, int]:
    """sample token -> dataset index."""
    return {dataset.get_data_info(i)['token']: i for i in range(len(dataset))}


@torch.no_grad()
def predict_one(model, dataset, index: int) -> dict:
    """Predictions of one sample.

    Returns:
        dict(pred=BoxSet of gravity-centre lidar boxes with scores,
        pred_masks=(C, Y, X) float probabilities or None,
        map_grid=the seg head's BEVGrid or None,
        map_classes=its classes or None).
    """
    from mmengine.dataset import pseudo_collate
    sample = model.test_step(pseudo_collate([dataset[index]]))[0]
    inst = sample.pred_instances_3d
    boxes = inst.bboxes_3d
    gravity = torch.cat([boxes.gravity_center, boxes.tensor[:, 3:7]], 1)
    pred = BoxSet(gravity.cpu().numpy(), inst.labels_3d.cpu().numpy(),
                  inst.scores_3d.cpu().numpy())
    out = dict(pred=pred, pred_masks=None, map_grid=None, map_classes=None)
    if 'pred_masks_bev' in sample and 'seg' in getattr(model, 'heads', {}):
        head = model.heads['seg']
        out.update(pred_masks=sample.pred_masks_bev.float().cpu().numpy(),
                   map_grid=head.map_grid, map_classes=tuple(head.classes))
    return out


def map_grid_of_pipeline(pipeline: Sequence[dict]):
    """The BEVGrid of the ``LoadBEVMapMasks`` step of a pipeline config, or
    None when it has none."""
    from fuller.structures.frames import BEVGrid
    for step in pipeline:
        if step.get('type') == 'LoadBEVMapMasks':
            return BEVGrid(tuple(step.get('x_range', (-50.0, 50.0))),
                           tuple(step.get('y_range', (-50.0, 50.0))),
                           step.get('cell_size', 0.5))
    return None


def merge_map_prediction(view, result: dict) -> None:
    """Put a :func:`predict_one` result (or a dict with only the map keys)
    into a ``SampleView`` in place."""
    if result.get('pred') is not None:
        view.pred = result['pred']
    masks = result.get('pred_masks')
    if masks is None:
        return
    if view.map_grid is not None and view.map_grid != result['map_grid']:
        raise ValueError(
            f'sample {view.token}: the model predicts masks on '
            f'{result["map_grid"]}, the GT cache is on {view.map_grid}')
    if view.gt_masks is not None and tuple(view.map_classes) != tuple(
            result['map_classes']):
        order = [list(result['map_classes']).index(c)
                 for c in view.map_classes]
        masks = masks[order]
    else:
        view.map_classes = tuple(result['map_classes'])
    view.map_grid = result['map_grid']
    view.pred_masks = np.asarray(masks, np.float32)


def load_saved_map_prediction(folder: str, token: str) -> dict:
    """A sample's map prediction saved by tools/test.py
    (``fuller.evaluation.map_predictions`` folder format), in the
    :func:`predict_one` layout without boxes."""
    from fuller.evaluation.map_predictions import (load_map_prediction,
                                                   prediction_path)
    from fuller.structures.frames import BEVGrid
    probs, names, grid = load_map_prediction(prediction_path(folder, token))
    grid = BEVGrid((grid[0], grid[1]), (grid[2], grid[3]),
                   (grid[4], grid[5]))
    return dict(pred=None, pred_masks=probs, map_grid=grid,
                map_classes=tuple(names))
