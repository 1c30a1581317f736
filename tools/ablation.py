"""Run an ablation study (variants x seeds) through tools/train.py and
tools/test.py, then write a Markdown table, a JSON file and a PNG chart.

Each run lives in ``WORK_DIR/<variant>/seed<S>/`` and is trained with
``--cfg-options randomness.seed=S`` (same seed = same initialisation and data
order for every variant). A run whose ``metrics.json`` exists is skipped; a
run with checkpoints but no metrics resumes training (``--resume``), so an
interrupted study picks up where it stopped. The aggregation (mean, seed
spread, paired differences to the baseline and the verdict rule) is
``fuller.evaluation.ablation``.

CPU study on the generated dataset (what README reports)::

    python tools/create_synthetic_nuscenes.py --root data/nuscenes-study \\
        --version v1.0-trainval --num-scenes 20 --num-val-scenes 6 \\
        --keyframes 8 --image-size 704 396 --seed 1
    python tools/create_data.py nuscenes --root-path data/nuscenes-study \\
        --out-dir data/nuscenes-study --version v1.0-trainval
    python tools/ablation.py --study tiny --seeds 0 1 2 \\
        --data-root data/nuscenes-study --work-dir work_dirs/study --epochs 4

The same study at full size on GPU nodes (8 GPUs per run through
tools/dist_train.sh / dist_test.sh, identical flags otherwise)::

    python tools/ablation.py --study full --seeds 0 1 2 --gpus 8 \\
        --data-root data/nuscenes --work-dir work_dirs/study-full

Several runners may work on one study at once (e.g. one per free machine or
core): each run is claimed with a lock file, so none is done twice.
``--variant NAME=CONFIG`` adds a variant of your own (repeatable);
``--variants A B`` keeps only some; ``--report-only`` aggregates what is
there without training.
"""
import argparse
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)

from fuller.evaluation.ablation import (plot, render_markdown,  # noqa: E402
                                        summarize)
from fuller.utils.io import atomic_open  # noqa: E402

BASELINE = 'naive'
_TINY = 'configs/{}/{}_1xb2-24e_synthetic-nus.py'
_FULL_BASE = ('configs/bevfusion/bevfusion_lidar-cam_voxel0075_second_secfpn_'
              '8xb4-cyclic-20e_nus-{}.py')
_FULL_FULLER = ('configs/fuller/fuller_lidar-cam_voxel0075_second_secfpn_'
                '8xb4-cyclic-20e_nus-det-seg.py')
# The full-size FULLER config ships task_magnitude='sum' (what the tiny study
# supports); the study's 'fuller' variant is IMTL-G with its published weights.
_PUBLISHED = ['model.grad_calibrator.task_magnitude=weights']
# name -> (config, extra --cfg-options). Tiny variants are config files a user
# can train alone; the full-size ones differ from the published configs only
# by the options listed (FULLER's light heads are kept for every multi-task
# full-size variant so that only the gradient treatment differs).
STUDIES: Dict[str, Dict[str, Tuple[str, List[str]]]] = {
    'tiny': {
        'det-only': (_TINY.format('bevfusion', 'bevfusion_tiny-det'), []),
        'seg-only': (_TINY.format('bevfusion', 'bevfusion_tiny-seg'), []),
        'naive': (_TINY.format('bevfusion', 'bevfusion_tiny'), []),
        'inter': (_TINY.format('fuller', 'fuller_tiny-inter'), []),
        'intra': (_TINY.format('fuller', 'fuller_tiny-intra'), []),
        'fuller': (_TINY.format('fuller', 'fuller_tiny'), []),
        'fuller-summag': (_TINY.format('fuller', 'fuller_tiny-summag'), []),
        'mgda-ub': (_TINY.format('fuller', 'fuller_tiny-mgda'), []),
        'pcgrad': (_TINY.format('fuller', 'fuller_tiny-pcgrad'), []),
    },
    'full': {
        'det-only': (_FULL_BASE.format('det'), []),
        'seg-only': (_FULL_BASE.format('seg'), []),
        'naive': (_FULL_FULLER, ['model.grad_calibrator=None']),
        'inter': (_FULL_FULLER, _PUBLISHED + [
            'model.grad_calibrator.enable_modality=False']),
        'intra': (_FULL_FULLER, ['model.grad_calibrator.enable_task=False']),
        'fuller': (_FULL_FULLER, _PUBLISHED),
        'fuller-summag': (_FULL_FULLER,
                          ['model.grad_calibrator.task_magnitude=sum']),
        'mgda-ub': (_FULL_FULLER, _PUBLISHED + [
            'model.grad_calibrator.task_method=mgda_ub']),
        'pcgrad': (_FULL_FULLER, _PUBLISHED + [
            'model.grad_calibrator.task_method=pcgrad']),
    },
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--study', choices=sorted(STUDIES), default='tiny',
                   help='named set of variants (default: tiny)')
    p.add_argument('--variants', nargs='+',
                   help='run only these variants of the study (the report '
                   'still covers every finished variant; it needs the '
                   f'baseline {BASELINE!r})')
    p.add_argument('--variant', action='append', default=[],
                   metavar='NAME=CONFIG', help='add a variant (repeatable)')
    p.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2])
    p.add_argument('--work-dir', required=True)
    p.add_argument('--data-root', help='passed to train.py / test.py')
    p.add_argument('--epochs', type=int,
                   help='training epochs of every run (overrides the config '
                   'schedule: max_epochs, val_interval and the cosine '
                   'T_max/end); the same budget for every variant')
    p.add_argument('--gpus', type=int, default=0,
                   help='> 0: train/test each run with tools/dist_train.sh '
                   '/ dist_test.sh on this many GPUs')
    p.add_argument('--cfg-options', nargs='+', default=[],
                   help='extra key=value options for every run')
    p.add_argument('--report-only', action='store_true',
                   help='aggregate the finished runs, train nothing')
    p.add_argument('--baseline', default=BASELINE,
                   help='variant the paired differences are taken against '
                   f'(default {BASELINE!r}, the plain summed loss)')
    p.add_argument('--out-name', default='results',
                   help='basename of the .md/.json/.png outputs')
    return p.parse_args(argv)


def select_variants(args) -> Tuple[Dict, Dict]:
    """(variants to run, variants to report). ``--variants`` picks the runs;
    the report covers every variant of the study (and ``--variant``) that has
    finished runs in the work dir, so several runners may share one study."""
    study = dict(STUDIES[args.study])
    for spec in args.variant:
        if '=' not in spec:
            raise SystemExit(f'ablation: --variant {spec!r} is not NAME=CONFIG')
        name, config = spec.split('=', 1)
        study[name] = (config, [])
    to_run = study
    if args.variants:
        unknown = sorted(set(args.variants) - set(study))
        if unknown:
            raise SystemExit(f'ablation: unknown variants {unknown} for study '
                             f'{args.study!r}; known: {sorted(study)}')
        to_run = {k: v for k, v in study.items() if k in args.variants}
    for name, (config, _) in to_run.items():
        if not osp.isfile(osp.join(ROOT, config)) and not osp.isfile(config):
            raise SystemExit(f'ablation: config {config} of variant {name!r} '
                             'does not exist')
    return to_run, study


def schedule_options(epochs: Optional[int]) -> List[str]:
    if epochs is None:
        return []
    return [f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs}',
            f'param_scheduler.1.T_max={epochs}',
            f'param_scheduler.1.end={epochs}']


def git_commit() -> str:
    try:
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        dirty = subprocess.run(['git', 'status', '--porcelain', '--', 'fuller',
                                'configs', 'tools'], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ('-dirty' if dirty else '')
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def _tool_cmd(args, tool: str, positional: List[str]) -> List[str]:
    if args.gpus > 0:
        script = osp.join(ROOT, 'tools', f'dist_{tool}.sh')
        return ['bash', script] + positional + [str(args.gpus)]
    return [sys.executable, osp.join(ROOT, 'tools', f'{tool}.py')] + positional


def _run(cmd: List[str], log_path: str) -> None:
    with open(log_path, 'a') as log:
        log.write(f'\n$ {" ".join(cmd)}\n')
        log.flush()
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f'ablation: command failed ({proc.returncode}), '
                           f'see {log_path}: {" ".join(cmd)}')


def last_checkpoint(run_dir: str) -> Optional[str]:
    """The checkpoint mmengine's CheckpointHook recorded last, if any."""
    marker = osp.join(run_dir, 'last_checkpoint')
    if not osp.isfile(marker):
        return None
    with open(marker) as f:
        path = f.read().strip()
    return path if osp.isfile(path) else None


def claim(run_dir: str) -> bool:
    """Take ``run_dir/.lock`` for this process (O_EXCL). A lock whose owner
    is no longer alive is taken over; one held by a live process is not, so
    several runners on one study share its runs without doing one twice."""
    lock = osp.join(run_dir, '.lock')
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                with open(lock) as f:
                    owner = int(f.read().strip() or 0)
                os.kill(owner, 0)
                return owner == os.getpid()
            except (ValueError, ProcessLookupError, FileNotFoundError):
                try:
                    os.remove(lock)  # stale: its owner died
                except FileNotFoundError:
                    pass
                continue
            except PermissionError:
                return False
        with os.fdopen(fd, 'w') as f:
            f.write(str(os.getpid()))
        return True
    return False


def run_one(args, name: str, config: str, options: List[str], seed: int
            ) -> Optional[str]:
    """Train + test one (variant, seed); returns its metrics.json path, or
    None when another live runner holds the run."""
    run_dir = osp.abspath(osp.join(args.work_dir, name, f'seed{seed}'))
    metrics = osp.join(run_dir, 'metrics.json')
    if osp.isfile(metrics):
        return metrics
    os.makedirs(run_dir, exist_ok=True)
    if not claim(run_dir):
        print(f'[ablation] {name} seed {seed}: held by another runner',
              flush=True)
        return None
    try:
        return _train_and_test(args, name, config, options, seed, run_dir,
                               metrics)
    finally:
        os.remove(osp.join(run_dir, '.lock'))


def _train_and_test(args, name, config, options, seed, run_dir, metrics):
    log = osp.join(run_dir, 'ablation.log')
    opts = ([f'randomness.seed={seed}'] + schedule_options(args.epochs) +
            options + list(args.cfg_options))
    data = ['--data-root', args.data_root] if args.data_root else []
    start = time.time()
    train = _tool_cmd(args, 'train', [config]) + [
        '--work-dir', run_dir] + data + ['--cfg-options'] + opts
    if last_checkpoint(run_dir):
        train.append('--resume')
    print(f'[ablation] {name} seed {seed}: training ({run_dir})', flush=True)
    _run(train, log)
    ckpt = last_checkpoint(run_dir)
    if ckpt is None:
        raise RuntimeError(f'ablation: {run_dir} has no last_checkpoint after '
                           'training')
    test = _tool_cmd(args, 'test', [config, ckpt]) + [
        '--work-dir', run_dir, '--out-metrics', metrics] + data + [
            '--cfg-options'] + opts
    print(f'[ablation] {name} seed {seed}: testing', flush=True)
    _run(test, log)
    meta = dict(variant=name, seed=seed, config=config, cfg_options=opts,
                checkpoint=ckpt, commit=git_commit(),
                wall_s=round(time.time() - start, 1), host=platform.node(),
                cpus=os.cpu_count(), gpus=args.gpus)
    with atomic_open(osp.join(run_dir, 'run.json')) as f:
        json.dump(meta, f, indent=1)
    return metrics


def collect(args, variants) -> Tuple[Dict, Dict]:
    runs: Dict = {}
    metas: Dict = {}
    for name in variants:
        for seed in args.seeds:
            run_dir = osp.join(args.work_dir, name, f'seed{seed}')
            path = osp.join(run_dir, 'metrics.json')
            if not osp.isfile(path):
                continue
            with open(path) as f:
                runs.setdefault(name, {})[seed] = json.load(f)
            meta_path = osp.join(run_dir, 'run.json')
            if osp.isfile(meta_path):
                with open(meta_path) as f:
                    metas.setdefault(name, {})[seed] = json.load(f)
    return runs, metas


def write_report(args, variants, argv) -> Optional[str]:
    runs, metas = collect(args, variants)
    if args.baseline not in runs:
        print(f'[ablation] no finished {args.baseline!r} run yet: no report')
        return None
    summary = summarize(runs, args.baseline)
    base = osp.join(args.work_dir, args.out_name)
    table = render_markdown(summary, args.baseline)
    command = 'python tools/ablation.py ' + ' '.join(argv)
    commits = sorted({m.get('commit', '?') for v in metas.values()
                      for m in v.values()})
    text = (f'# Ablation study `{args.study}`\n\nCommand: `{command}`\n\n'
            f'Commit(s) of the runs: {", ".join(commits) or "unknown"}\n\n'
            f'Seeds: {args.seeds}. Mean ± seed spread (sample std over seeds).'
            f'\n\n{table}\n![chart]({osp.basename(base)}.png)\n')
    with atomic_open(base + '.md') as f:
        f.write(text)
    with atomic_open(base + '.json') as f:
        json.dump(dict(study=args.study, command=command, commits=commits,
                       seeds=args.seeds, baseline=args.baseline,
                       variants={k: dict(config=c, cfg_options=o)
                                 for k, (c, o) in variants.items()},
                       summary=summary, runs=runs, run_meta=metas), f,
                  indent=1, sort_keys=False)
    plot(summary, base + '.png')
    print(text)
    return base + '.md'


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    to_run, study = select_variants(args)
    if not args.report_only:
        # seed-major order: every variant gets seed 0 before any gets seed 1,
        # so a study cut short still has paired runs to compare.
        for seed in args.seeds:
            for name, (config, options) in to_run.items():
                run_one(args, name, config, options, seed)
            write_report(args, study, argv)
    return write_report(args, study, argv)


if __name__ == '__main__':
    main()
