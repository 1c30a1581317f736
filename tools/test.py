"""Evaluate a fuller checkpoint: ``python tools/test.py CONFIG CHECKPOINT``.

Thin CLI over mmengine's Runner. Multi-GPU: ``tools/dist_test.sh CONFIG CKPT GPUS``.
``--out-metrics FILE`` also writes the metrics as JSON (atomically).

Leaderboard submission (no ground truth needed)::

    python tools/test.py CONFIG CKPT --format-only --out-dir DIR --test-split

writes ``DIR/results_nusc.json`` (validated with
``tools/validate_submission.py``'s checks), ``DIR/map_predictions/`` and
``DIR/run.json``; see ``fuller.evaluation.format_only``. ``--test-split``
(or ``--cfg-options test_split=True``) switches the test dataloader to the
v1.0-test infos; without it the configured split (val) is formatted.
"""
import argparse
import json
import os
import os.path as osp
import sys

# only the argument parser is imported up front, so `--help` answers at once; mmengine,
# mmdet3d and fuller (seconds: spconv) are imported once the arguments are valid
from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test a fuller model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where metrics and logs go')
    parser.add_argument('--data-root', help='dataroot with tables + infos; '
                        'overrides every dataloader and nuScenes evaluator')
    parser.add_argument('--out-metrics', help='write the metrics to a JSON file')
    parser.add_argument('--format-only', action='store_true',
                        help='write the submission file and map predictions '
                        'to --out-dir instead of computing metrics')
    parser.add_argument('--out-dir', help='output directory of --format-only')
    parser.add_argument('--test-split', action='store_true',
                        help='run on the v1.0-test infos '
                        '(config key test_split_ann_file)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'])
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if args.format_only != bool(args.out_dir):
        parser.error('--format-only and --out-dir go together')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def main(argv=None):
    args = parse_args(argv)
    from mmengine.config import Config
    from mmengine.dist import barrier, is_main_process
    from mmengine.runner import Runner

    from fuller.compat import register_checkpoint_safe_globals
    from fuller.evaluation import format_only as fo
    from fuller.utils.config_utils import apply_cli_overrides
    from fuller.utils.dist import setup_cpu_distributed
    from fuller.utils.io import atomic_open
    register_checkpoint_safe_globals()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint} does not exist')
    cfg = apply_cli_overrides(
        Config.fromfile(args.config), args.config, launcher=args.launcher,
        data_root=args.data_root, cfg_options=args.cfg_options,
        work_dir=args.work_dir)
    if args.test_split:
        cfg.test_split = True
    identity, split = fo.prepare_run(cfg, args.checkpoint, args.out_dir)
    cfg.load_from = args.checkpoint
    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    if args.format_only:
        if is_main_process():
            fo.start_partial(args.out_dir, identity)
        barrier()
    metrics = runner.test()
    if args.format_only and is_main_process():
        dataset = fo.test_dataset(cfg)
        tokens = fo.expected_tokens(dataset.data_root, split['version'],
                                    split['split'], fo.test_ann_file(cfg))
        summary = fo.finish(args.out_dir, identity, tokens)
        print(f'submission: {json.dumps(summary)}')
        print(f'outputs in {args.out_dir}')
        metrics = {f'submission/{k}': v for k, v in summary.items()
                   if isinstance(v, (int, float))}
    if args.out_metrics and is_main_process():
        with atomic_open(args.out_metrics) as f:
            json.dump({k: float(v) for k, v in metrics.items()}, f, indent=2,
                      sort_keys=True)
    return metrics


if __name__ == '__main__':
    try:
        main()
    except Exception as err:
        from fuller.evaluation.format_only import FormatOnlyError
        if not isinstance(err, FormatOnlyError):
            raise
        # a user error (missing or stale submission input): one line, no traceback
        print(f'test.py: error: {err}', file=sys.stderr)
        sys.exit(1)
