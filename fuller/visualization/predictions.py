"""Predictions for pictures: the map grid of a pipeline, and merging a
sample's predictions (from ``fuller.apis.inference_multitask`` or a saved
map-prediction folder) into a ``SampleView``.

Shape shorthand: M boxes, C map classes, Y/X map rows/columns.

The test pipeline of fuller's configs applies no LiDAR augmentation, so the
predicted boxes and map masks are in the keyframe ``lidar`` frame, the frame
of the info's GT boxes and cached map masks.
"""
from typing import Sequence

import numpy as np


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
    """Put a prediction ``dict(pred=BoxSet or None, pred_masks=(C, Y, X) or
    None, map_grid, map_classes)`` into a ``SampleView`` in place
    (tools/analysis/visualize.py makes one from ``fuller.apis``' result)."""
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
    :func:`merge_map_prediction` layout without boxes."""
    from fuller.evaluation.map_predictions import (load_map_prediction,
                                                   prediction_path)
    from fuller.structures.frames import BEVGrid
    probs, names, grid = load_map_prediction(prediction_path(folder, token))
    grid = BEVGrid((grid[0], grid[1]), (grid[2], grid[3]),
                   (grid[4], grid[5]))
    return dict(pred=None, pred_masks=probs, map_grid=grid,
                map_classes=tuple(names))
