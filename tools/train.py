"""Train a fuller model: ``python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]]``.

Thin CLI over mmengine's Runner. Multi-GPU: ``tools/dist_train.sh CONFIG GPUS``.
An epoch-based ``train_cfg`` without a ``type`` runs fuller's
``ResumableEpochBasedTrainLoop``, so that ``--resume`` from a mid-epoch
checkpoint continues the epoch instead of restarting it.
"""
import argparse
import os

# only the argument parser is imported up front, so `--help` answers at once; mmengine,
# mmdet3d and fuller (seconds: spconv) are imported once the arguments are valid
from mmengine.config import DictAction


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a fuller model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr linearly with the global batch')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from CKPT, or from the latest checkpoint in the work '
        'dir when no path is given')
    parser.add_argument('--load-from', help='initialise weights from CKPT '
                        '(e.g. the LiDAR-only stage of the two-stage recipe); '
                        'loaded keys are reported, shape mismatches stop the '
                        'run')
    parser.add_argument('--load-allow-shape-mismatch', nargs='+',
                        metavar='PATTERN', help='with --load-from: model keys '
                        '(fnmatch patterns, e.g. "heads.det.*") that may '
                        'differ in shape and are then left as initialised')
    parser.add_argument('--data-root', help='dataroot with tables + infos; '
                        'overrides every dataloader and nuScenes evaluator')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config entries, key=value')
    parser.add_argument('--launcher', default='none',
                        choices=['none', 'pytorch', 'slurm', 'mpi'])
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_config(args):
    from mmengine.config import Config

    from fuller.utils.checkpoint_loading import use_partial_loading
    from fuller.utils.config_utils import apply_cli_overrides
    cfg = apply_cli_overrides(
        Config.fromfile(args.config), args.config, launcher=args.launcher,
        data_root=args.data_root, cfg_options=args.cfg_options,
        work_dir=args.work_dir)
    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or \
                'base_batch_size' not in cfg.auto_scale_lr:
            raise RuntimeError(
                f'{args.config}: --auto-scale-lr needs '
                '`auto_scale_lr = dict(base_batch_size=...)` in the config')
        cfg.auto_scale_lr.enable = True
    if args.load_from is not None:
        use_partial_loading(cfg, args.load_from,
                            args.load_allow_shape_mismatch)
    train_cfg = cfg.get('train_cfg') or {}
    if train_cfg.get('by_epoch', False) and 'type' not in train_cfg:
        # mmengine's epoch loop restarts a resumed epoch from its first batch
        cfg.train_cfg.pop('by_epoch')
        cfg.train_cfg.type = 'ResumableEpochBasedTrainLoop'
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None):
    args = parse_args(argv)
    from mmengine.runner import Runner

    from fuller.compat import register_checkpoint_safe_globals
    from fuller.utils.dist import setup_cpu_distributed
    register_checkpoint_safe_globals()
    cfg = build_config(args)
    setup_cpu_distributed(cfg)
    runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
