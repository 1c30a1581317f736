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
PNGs are named ``<sample token>.png``. Drawing: fuller.visualization.
"""
import argparse
import os
import os.path as osp
import sys
import time

import matplotlib

matplotlib.use('Agg')

import numpy as np  # noqa: E402
from mmengine.config import DictAction  # noqa: E402
from tqdm import tqdm  # noqa: E402

from fuller.utils.config_utils import load_config, set_data_root  # noqa: E402
from fuller.visualization import (load_info_file, load_results_file,  # noqa: E402
                                  load_sample_view, map_grid_of_pipeline,
                                  merge_map_prediction, render_sample,
                                  results_for_info, save_figure)
from fuller.visualization.predictions import (  # noqa: E402
    build_dataset, build_model, index_by_token, load_saved_map_prediction,
    predict_one)


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
        yield from tqdm(items, desc=desc, file=sys.stdout)
        return
    start = time.perf_counter()
    for i, item in enumerate(items, 1):
        yield item
        spent = time.perf_counter() - start
        left = round(spent / i * (len(items) - i))
        print(f'[{desc}] {i}/{len(items)} ({spent:.0f} s, '
              f'eta: {left // 60}:{left % 60:02d})', flush=True)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if args.data_root:
        set_data_root(cfg, args.data_root)
    ds_cfg = cfg.test_dataloader.dataset
    data_root = ds_cfg.data_root
    ann_file = args.ann_file or f'nuscenes_infos_{args.split}.pkl'
    if not osp.isabs(ann_file):
        ann_file = osp.abspath(osp.join(data_root, ann_file))
    class_names = cfg.get('class_names') or ds_cfg.metainfo.classes
    map_grid = map_grid_of_pipeline(ds_cfg.pipeline)
    infos = pick_infos(load_info_file(ann_file), args.samples, args.tokens)

    model = dataset = index = results = None
    if args.checkpoint:
        model = build_model(cfg, args.checkpoint)
        dataset = build_dataset(cfg, ann_file)
        index = index_by_token(dataset)
    elif args.results:
        results = load_results_file(args.results)

    os.makedirs(args.out_dir, exist_ok=True)
    for info in progress(infos):
        view = load_sample_view(info, data_root, dict(ds_cfg.data_prefix),
                                class_names, map_grid)
        view.title = args.title
        if model is not None:
            merge_map_prediction(view, predict_one(model, dataset,
                                                   index[info['token']]))
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
