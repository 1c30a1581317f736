"""Save the BEV map predictions of an evaluation run, one file per sample.

Shape shorthand: M map classes, Y/X map-grid cells.

The folder format is documented in ``fuller.evaluation.map_predictions``;
``tools/eval_map_predictions.py`` scores a saved folder against the cached
ground truth with ``BEVMapIoUMetric``.
"""
from typing import Dict, Optional, Sequence

from mmdet3d.registry import METRICS
from mmengine import load
from mmengine.evaluator import BaseMetric

from fuller.structures import MAP_CLASSES
from fuller.structures.frames import BEVGrid

from ..map_predictions import (prediction_path, save_map_prediction,
                               write_index)


@METRICS.register_module()
class BEVMapPredictionWriter(BaseMetric):
    """Writes each sample's ``pred_masks_bev`` (float (M, Y, X)
    probabilities on the map grid) to ``out_dir/<token>.npz`` as it arrives
    (every rank writes its own samples), then ``out_dir/index.json``.

    Args:
        out_dir: the map-prediction folder.
        grid: ``dict(x_range, y_range, cell_size)`` of the map grid (the
            seg head's ``map_grid``).
        classes: map classes in channel order.
        ann_file: info file of the split; when given, every one of its
            samples must have been written.
        collect_device, prefix: as mmengine's ``BaseMetric``.
    """
    default_prefix: Optional[str] = 'map_predictions'

    def __init__(self,
                 out_dir: str,
                 grid: dict,
                 classes: Sequence[str] = MAP_CLASSES,
                 ann_file: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.out_dir = out_dir
        self.grid = dict(grid)
        self.shape = (len(classes), *BEVGrid(grid['x_range'],
                                             grid['y_range'],
                                             grid['cell_size']).shape)
        self.classes = tuple(classes)
        self.ann_file = ann_file

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            probs = sample.get('pred_masks_bev')
            token = sample.get('token')
            if probs is None or token is None:
                raise KeyError('BEVMapPredictionWriter: data sample lacks '
                               'pred_masks_bev or token (is the seg head on?)')
            if tuple(probs.shape) != self.shape:
                raise ValueError(
                    f'BEVMapPredictionWriter: sample {token}: pred_masks_bev '
                    f'{tuple(probs.shape)}, expected {self.shape} from grid '
                    f'{self.grid}')
            save_map_prediction(prediction_path(self.out_dir, token),
                                probs.detach().float().cpu().numpy(),
                                self.classes, self.grid)
            self.results.append(token)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        tokens = set(results)
        if self.ann_file is not None:
            expected = {i['token'] for i in load(self.ann_file)['data_list']}
            missing = sorted(expected - tokens)
            if missing:
                raise RuntimeError(
                    f'BEVMapPredictionWriter: {len(missing)} samples of '
                    f'{self.ann_file} have no map prediction, e.g. '
                    f'{missing[:3]}')
        write_index(self.out_dir, tokens, self.classes, self.grid,
                    self.shape)
        return {}
