"""Pictures of predictions: one PNG per sample, a BEV panel and the six cameras.

    # run the model on 4 validation samples
    python tools/analysis/visualize.py CONFIG CKPT --samples 4 --out-dir pics/
    # the same from a saved nuScenes submission, without the model
    python tools/analysis/visualize.py CONFIG --results results_nusc.json \
        --tokens TOKEN ... --out-dir pics/
    # ground truth only, e.g. on the real frames
    python tools/analysis/visualize.py CONFIG --data-root ../shared/nuscenes-real \
        --ann-file infos/sample_a_infos_v2.pkl --out-dir pics/

The config gives the data root, file prefixes, class names and the map grid;
PNGs are named ``<sample token>.png``. With a checkpoint the model runs through
fuller's inference API (``fuller.apis``: ``init_model`` + ``inference_multitask``,
the predictions tools/test.py makes). Drawing: fuller.visualization.
"""
import argparse
import os
import os.path as osp
import sys
import time

import numpy as np
# only the argument parser is imported up front (`--help` answers at once);
# matplotlib, mmdet3d and fuller are imported once the arguments are valid
from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='model / dataset config')
    parser.add_argument('checkpoint', nargs='?',
                        help='checkpoint: run the model on the samples')
    parser.add_argument('--results', help='nuScenes submission json '
                        '(results_nusc.json) to draw instead of running a '
                        'model')
    parser.add_argument('--map-results', help='folder of saved map '
                        'predictions (fuller.evaluation.map_predictions) to '
                        'draw with --results')
    parser.add_argument('--split', default='val',
                        help='info file nuscenes_infos_<split>.pkl')
    parser.add_argument('--ann-file', help='info pkl (relative to the data '
                        'root or absolute); overrides --split')
    parser.add_argument('--data-root', help='overrides the config data root')
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--samples', type=int, default=4,
                       help='N samples spread evenly over the split')
    group.add_argument('--tokens', nargs='+', help='these sample tokens')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--score-thr', type=float, default=0.3)
    parser.add_argument('--title', default='', help='e.g. the run name')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    if args.checkpoint and (args.results or args.map_results):
        parser.error('give a checkpoint or --results/--map-results, not both')
    return args


def pick_infos(infos, samples: int, tokens=None):
    """The infos to draw: the given tokens (in that order) or ``samples``
    evenly spread over the list."""
    if tokens:
        by_token = {info['token']: info for info in infos}
        missing = [t for t in tokens if t not in by_token]
        if missing:
            raise KeyError(f'sample tokens not in the info file: {missing}')
        return [by_token[t] for t in tokens]
    if samples < 1:
        raise ValueError(f'--samples must be >= 1, got {samples}')
    n = min(samples, len(infos))
    idx = np.unique(np.linspace(0, len(infos) - 1, n).round().astype(int))
    return [infos[i] for i in idx]


def progress(items, desc: str = 'visualize'):
    """Yield ``items``; a tqdm bar on a terminal, otherwise one plain line
    ``[desc] i/N (elapsed s, eta: M:SS)`` after each item (logs, run_demo.sh's
    progress monitor)."""
    if sys.stdout.isatty():
        from tqdm import tqdm
        yield from tqdm(items, desc=desc, file=sys.stdout)
        return
    start = time.perf_counter()
    for i, item in enumerate(items, 1):
        yield item
        spent = time.perf_counter() - start
        left = round(spent / i * (len(items) - i))
        print(f'[{desc}] {i}/{len(items)} ({spent:.0f} s, '
              f'eta: {left // 60}:{left % 60:02d})', flush=True)


def view_prediction(result) -> dict:
    """A ``fuller.apis.MultiTaskResult`` in the layout
    ``fuller.visualization.merge_map_prediction`` takes: gravity-centre
    boxes (x, y, z, dx, dy, dz, yaw) in a ``BoxSet``, (C, Y, X) mask
    probabilities, their grid and class names."""
    import torch

    from fuller.visualization import BoxSet
    boxes = result.bboxes_3d
    gravity = torch.cat([boxes.gravity_center, boxes.tensor[:, 3:7]], 1)
    return dict(pred=BoxSet(gravity.numpy(), result.labels_3d.numpy(),
                            result.scores_3d.numpy()),
                pred_masks=(None if result.map_probs is None else
                            result.map_probs.numpy()),
                map_grid=result.map_grid, map_classes=result.map_classes)


def main(argv=None):
    args = parse_args(argv)
    import matplotlib
    matplotlib.use('Agg')
    from mmengine.config import Config

    from fuller.apis import build_sample_parser, inference_multitask, init_model
    from fuller.utils.config_utils import (check_config_consistency,
                                           set_data_root)
    from fuller.visualization import (load_info_file, load_results_file,
                                      load_sample_view, map_grid_of_pipeline,
                                      merge_map_prediction, render_sample,
                                      results_for_info, save_figure)
    from fuller.visualization.predictions import load_saved_map_prediction
    cfg = Config.fromfile(args.config)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    check_config_consistency(cfg)
    ds_cfg = cfg.test_dataloader.dataset
    data_root = ds_cfg.data_root
    ann_file = args.ann_file or f'nuscenes_infos_{args.split}.pkl'
    if not osp.isabs(ann_file):
        ann_file = osp.abspath(osp.join(data_root, ann_file))
    class_names = cfg.get('class_names') or ds_cfg.metainfo.classes
    map_grid = map_grid_of_pipeline(ds_cfg.pipeline)
    infos = pick_infos(load_info_file(ann_file), args.samples, args.tokens)

    model = parser = results = None
    if args.checkpoint:
        model = init_model(cfg, args.checkpoint, device='cpu')
        parser = build_sample_parser(model.cfg)
    elif args.results:
        results = load_results_file(args.results)

    os.makedirs(args.out_dir, exist_ok=True)
    for info in progress(infos):
        view = load_sample_view(info, data_root, dict(ds_cfg.data_prefix),
                                class_names, map_grid)
        view.title = args.title
        if model is not None:
            merge_map_prediction(view, view_prediction(
                inference_multitask(model, info, parser=parser)))
        elif results is not None:
            view.pred = results_for_info(results, info, class_names)
        if args.map_results:
            merge_map_prediction(view, load_saved_map_prediction(
                args.map_results, info['token']))
        fig = render_sample(view, score_thr=args.score_thr)
        save_figure(fig, osp.join(args.out_dir, f'{info["token"]}.png'))
    print(f'[visualize] {len(infos)} pictures in {args.out_dir}')


if __name__ == '__main__':
    main()
