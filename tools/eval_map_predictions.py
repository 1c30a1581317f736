"""Score a saved map-prediction folder against the cached ground truth.

Usage::

    python tools/eval_map_predictions.py PRED_DIR --infos INFOS.pkl \\
        [--map-mask-root DIR] [--config CONFIG] [--out FILE.json]

PRED_DIR is ``<out-dir>/map_predictions`` of ``tools/test.py --format-only``
(format: ``fuller.evaluation.map_predictions``). Ground truth is the map-mask
cache of ``tools/create_data.py`` (each info's ``map_mask_path``, relative
to ``--map-mask-root``, default the folder of INFOS). The metric is
``BEVMapIoUMetric``, the class of training-time evaluation, with the
settings of CONFIG's ``BEVMapIoUMetric`` evaluator if given. Every sample of
INFOS must have a prediction. Exits 1 naming the problem.
"""
import argparse
import json
import os.path as osp
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('pred_dir', help='map-prediction folder (index.json)')
    p.add_argument('--infos', required=True, help='info .pkl of the split')
    p.add_argument('--map-mask-root', help='folder map_mask_path is '
                   'relative to (default: the folder of --infos)')
    p.add_argument('--config', help='take BEVMapIoUMetric settings from '
                   'this config\'s test_evaluator')
    p.add_argument('--out', help='also write the metrics to this JSON file')
    return p.parse_args(argv)


def metric_settings(config_path) -> dict:
    """kwargs of the config's BEVMapIoUMetric evaluator (or none)."""
    if config_path is None:
        return {}
    from fuller.utils.config_utils import load_config
    cfg = load_config(config_path)
    evaluators = cfg.get('test_evaluator') or []
    if isinstance(evaluators, dict):
        evaluators = [evaluators]
    for ev in evaluators:
        if ev.get('type') == 'BEVMapIoUMetric':
            return {k: v for k, v in ev.items() if k != 'type'}
    raise ValueError(f'{config_path}: no BEVMapIoUMetric in test_evaluator')


def evaluate_folder(pred_dir: str, infos_path: str, map_mask_root=None,
                    metric_kwargs=None) -> dict:
    """BEVMapIoUMetric over every sample of ``infos_path``."""
    import pickle

    import numpy as np
    import torch

    from fuller.datasets.map_mask_io import load_map_masks
    from fuller.evaluation.map_predictions import (grid_vector,
                                                   load_map_prediction,
                                                   prediction_path,
                                                   read_index)
    from fuller.evaluation.metrics import BEVMapIoUMetric
    index = read_index(pred_dir)
    classes = tuple(index['class_names'])
    metric = BEVMapIoUMetric(**{'classes': classes, **(metric_kwargs or {})})
    if tuple(metric.classes) != classes:
        raise ValueError(f'metric classes {metric.classes} differ from the '
                         f'predicted classes {classes}')
    with open(infos_path, 'rb') as f:
        data_list = pickle.load(f)['data_list']
    root = map_mask_root or osp.dirname(osp.abspath(infos_path))
    grid = grid_vector(index['grid'])
    for info in data_list:
        token = info['token']
        path = prediction_path(pred_dir, token)
        if not osp.isfile(path):
            raise FileNotFoundError(f'{pred_dir} has no prediction for '
                                    f'sample {token} of {infos_path}')
        if 'map_mask_path' not in info:
            raise KeyError(f'{infos_path}: sample {token} has no '
                           f'map_mask_path (no map ground truth)')
        probs, names, file_grid = load_map_prediction(path)
        if names != classes or not np.allclose(file_grid, grid):
            raise ValueError(f'{path}: classes {names} / grid {file_grid} '
                             f'differ from {pred_dir}/index.json')
        gt = load_map_masks(osp.join(root, info['map_mask_path']), classes)
        if gt.shape != probs.shape:
            raise ValueError(f'sample {token}: prediction {probs.shape} and '
                             f'ground truth {gt.shape} are on other grids')
        metric.process(None, [dict(pred_masks_bev=torch.from_numpy(probs),
                                   gt_masks_bev=torch.from_numpy(gt))])
    metrics = metric.compute_metrics(metric.results)
    return {f'{metric.default_prefix}/{k}': v for k, v in metrics.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    from fuller.datasets.map_mask_io import MapMaskFileError
    from fuller.evaluation.map_predictions import MapPredictionFileError
    from fuller.utils.io import atomic_open
    try:
        metrics = evaluate_folder(args.pred_dir, args.infos,
                                  args.map_mask_root,
                                  metric_settings(args.config))
    except (FileNotFoundError, KeyError, ValueError, MapMaskFileError,
            MapPredictionFileError) as err:
        print(f'eval_map_predictions: error: {err}', file=sys.stderr)
        return 1
    for key in sorted(metrics):
        print(f'{key}: {metrics[key]:.4f}')
    if args.out:
        with atomic_open(args.out) as f:
            json.dump(metrics, f, indent=2, sort_keys=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
