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

``--study full`` includes the static-weight front (naive-seg3/10/30) and
reports the multi-task penalty and the calibrations against that front;
``--variants det-only seg-only naive naive-seg3 naive-seg10 naive-seg30
fuller-summag`` is the sweep docs/study-v3 says to run first.

The multi-task study (docs/study-v3: trunk width, per-task decoders,
schedule and the static map-loss weights, each setting with its single-task
references; ``--study multitask``) is driven by docs/study-v3/run_study.sh
from a worktree pinned to one commit.

Several runners may work on one study at once (e.g. one per core): each run
is claimed with a lock file, so none is done twice. The first runner writes
``WORK_DIR/study_pin.json`` (commit and machine: CPU model, flags, torch);
a runner at another commit or on another machine stops, so every pair of
runs the report compares comes from one commit and one machine. Each run's
``run.json`` records the commit when training started (``-dirty`` if the
tree had any change), the machine and the dataset; ``--record-dir`` keeps a
compact copy of each finished run for committing. The report gives mean ±
seed spread and, for every comparison, the mean paired difference with its
95 % t-interval and verdict (``fuller.evaluation.ablation``);
``--from-json`` re-renders a committed results JSON.
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

from fuller.evaluation.ablation import (MARGIN, penalty,  # noqa: E402
                                        penalty_trend, plot, render_report,
                                        summarize,
                                        versus, versus_front)
from fuller.evaluation.study_charts import (pareto_chart,  # noqa: E402
                                            penalty_chart)
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
        # loss-rate task weighting (fuller.calibration.famo), added after
        # docs/study-v3's pinned commit: measured in docs/study-famo
        'famo': (_TINY.format('study', 'bevfusion_tiny-famo'), []),
    },
    # The multi-task study (docs/study-v3): each setting's single-task
    # models, the plain sum, FULLER with the sum's length (and as published)
    # and the static map-loss weights of the scalarization front.
    'multitask': {},
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

_STUDY = 'configs/study/{}_1xb2-24e_synthetic-nus.py'
# setting -> (suffix of its variant names, {role: (config, options)}); the
# roles det-only / seg-only are the single-task references of the setting's
# multi-task penalty.
SEG_WEIGHTS = (3, 10, 30)
SCHEDULE_12E = ['train_cfg.max_epochs=12', 'train_cfg.val_begin=13',
                'param_scheduler.1.T_max=12', 'param_scheduler.1.end=12']


def _static_front(config: str) -> Dict[str, Tuple[str, List[str]]]:
    return {f'naive-seg{w}': (config, [f'model.loss_weights.seg={float(w)}'])
            for w in SEG_WEIGHTS}


# The full-size study gets the same front (the plain sum of the FULLER config, no calibrator): the
# sweep docs/study-v3 says to run before trusting any calibration at full size.
STUDIES['full'].update({
    name: (_FULL_FULLER, ['model.grad_calibrator=None'] + options)
    for name, (_, options) in _static_front(_FULL_FULLER).items()})

SETTINGS: Dict[str, Tuple[str, Dict[str, Tuple[str, List[str]]]]] = {
    'w64': ('', dict(
        STUDIES['tiny'], **_static_front(STUDIES['tiny']['naive'][0]))),
    'taskdec': ('-taskdec', {
        'naive': (_STUDY.format('bevfusion_tiny-taskdec'), []),
        'fuller-summag': (_STUDY.format('fuller_tiny-summag-taskdec'), [])}),
    'e12': ('-e12', {k: (c, SCHEDULE_12E) for k, (c, _) in STUDIES['tiny'].items()
                     if k in ('det-only', 'seg-only', 'naive', 'fuller-summag')}),
}
for _w in (128, 256):
    _naive = _STUDY.format(f'bevfusion_tiny-w{_w}')
    SETTINGS[f'w{_w}'] = (f'-w{_w}', dict({
        'det-only': (_STUDY.format(f'bevfusion_tiny-w{_w}-det'), []),
        'seg-only': (_STUDY.format(f'bevfusion_tiny-w{_w}-seg'), []),
        'naive': (_naive, []),
        'fuller-summag': (_STUDY.format(f'fuller_tiny-w{_w}-summag'), [])},
        **_static_front(_naive)))
for _setting, (_suffix, _roles) in SETTINGS.items():
    for _role, _spec in _roles.items():
        STUDIES['multitask'][_role + _suffix] = _spec


def penalty_settings(variants, settings=None) -> Dict[str, Dict]:
    """{setting: {det_only, seg_only, plain_sum, multitask, calibrations,
    front, roles}} for a study's penalty tables and its comparisons with the
    setting's plain sum and static-weight front (``settings``: shaped like
    :data:`SETTINGS`, which is the default); per-task decoders are judged
    against the shared-decoder single-task models and plain sum (one task
    alone has nothing to share; the shared plain sum is what a per-task
    decoder replaces)."""
    settings = SETTINGS if settings is None else settings
    out = {}
    # report and chart order: the capacity axis, the schedule, then per-task decoders
    order = sorted(settings, key=lambda name: (name == 'taskdec', name == 'e12',
                                               int(name[1:]) if name[1:].isdigit() else 0))
    for setting in order:
        suffix, roles = settings[setting]
        ref = '' if setting == 'taskdec' else suffix
        # the multi-task roles that have runs, role -> variant
        mt = {r: r + suffix for r in roles
              if r not in ('det-only', 'seg-only') and r + suffix in variants}
        front = [f'naive-seg{w}{suffix}' for w in SEG_WEIGHTS]
        plain = ['naive' + suffix] + front
        out[setting] = dict(det_only='det-only' + ref,
                            roles=mt,
                            seg_only='seg-only' + ref,
                            plain_sum='naive' + ref,
                            multitask=list(mt.values()),
                            # every other way of weighting the tasks
                            calibrations=[v for v in mt.values() if v not in plain],
                            front=[v for v in front if v in variants])
    return out


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
    p.add_argument('--work-dir', help='where the runs live (required '
                   'unless --from-json)')
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
    p.add_argument('--margin', type=float, default=MARGIN,
                   help='equivalence margin of the verdicts (absolute, every '
                   f'metric; default {MARGIN})')
    p.add_argument('--record-dir',
                   help='also keep each finished run\'s metrics and metadata '
                   'as <record-dir>/<variant>/seed<S>.json (small, committed '
                   'with the study): a run recorded there is not trained '
                   'again, and the report reads it when the work dir lacks it')
    p.add_argument('--data-command',
                   help='the command that generated the dataset, recorded in '
                   'each run\'s metadata')
    p.add_argument('--from-json', metavar='RESULTS_JSON',
                   help='re-render RESULTS_JSON\'s .md (and summary, charts) '
                   'from its per-seed metrics; trains nothing')
    args = p.parse_args(argv)
    if not args.work_dir and not args.from_json:
        p.error('--work-dir is required (unless --from-json)')
    return args


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
    """The schedule of ``epochs`` epochs; the run is evaluated once, by
    tools/test.py, after training (val_begin past the last epoch)."""
    if epochs is None:
        return []
    return [f'train_cfg.max_epochs={epochs}', f'train_cfg.val_begin={epochs + 1}',
            f'param_scheduler.1.T_max={epochs}',
            f'param_scheduler.1.end={epochs}']


def git_commit() -> str:
    """HEAD of the tree the runs use, '-dirty' when anything tracked or
    untracked-but-not-ignored differs from it (anywhere in the tree)."""
    try:
        out = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        dirty = subprocess.run(['git', 'status', '--porcelain'], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ('-dirty' if dirty else '')
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'


def machine() -> Dict[str, str]:
    """CPU model and flags (runs on different CPUs differ beyond the last
    bits, so a seed's variants are only paired on one machine), host."""
    info = dict(host=platform.node(), machine=platform.machine(),
                cpu_model='unknown', cpu_flags='')
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if key == 'model name' and info['cpu_model'] == 'unknown':
                    info['cpu_model'] = value.strip()
                elif key == 'flags' and not info['cpu_flags']:
                    info['cpu_flags'] = value.strip()
    except OSError:
        pass
    import torch
    info['torch'] = torch.__version__
    info['threads'] = os.environ.get('OMP_NUM_THREADS', 'unset')
    return info


def machine_id(info: Dict[str, str]) -> str:
    """What must match for two runs to pair: CPU model, flags hash, torch."""
    import hashlib
    flags = hashlib.sha1(info['cpu_flags'].encode()).hexdigest()[:8]
    return f"{info['cpu_model']} (flags {flags}, torch {info['torch']})"


def dataset_info(data_root: Optional[str], command: Optional[str]) -> Dict:
    """Version folder(s), train/val sample counts of the infos and the
    generator command of the data root."""
    info: Dict = dict(root=data_root, command=command)
    if not data_root or not osp.isdir(data_root):
        return info
    import pickle
    info['versions'] = sorted(d for d in os.listdir(data_root)
                              if d.startswith('v1.0'))
    for split in ('train', 'val'):
        path = osp.join(data_root, f'nuscenes_infos_{split}.pkl')
        if osp.isfile(path):
            with open(path, 'rb') as f:
                info[f'{split}_samples'] = len(pickle.load(f)['data_list'])
    return info


def check_pin(args) -> None:
    """Every run of a work dir comes from one commit on one machine: the
    first runner writes ``study_pin.json``; a runner that differs stops."""
    path = osp.join(args.work_dir, 'study_pin.json')
    here = dict(commit=git_commit(), machine=machine_id(machine()))
    if osp.isfile(path):
        with open(path) as f:
            pinned = json.load(f)
        diff = [f'{k}: pinned {pinned.get(k)!r}, here {v!r}'
                for k, v in here.items() if pinned.get(k) != v]
        if diff:
            raise SystemExit(f'ablation: {path} pins the study to another '
                             'commit or machine (runs would not pair): ' +
                             '; '.join(diff) + '. Use another --work-dir.')
        return
    os.makedirs(args.work_dir, exist_ok=True)
    with atomic_open(path) as f:
        json.dump(here, f, indent=1)


def _tool_cmd(args, tool: str, positional: List[str]) -> List[str]:
    if args.gpus > 0:
        script = osp.join(ROOT, 'tools', f'dist_{tool}.sh')
        return ['bash', script] + positional + [str(args.gpus)]
    return [sys.executable, osp.join(ROOT, 'tools', f'{tool}.py')] + positional


def _run(cmd: List[str], log_path: str) -> None:
    with open(log_path, 'a') as log:
        log.write(f'\n$ {" ".join(cmd)}\n')
        log.flush()
        # the fuller package of this tree, not the one pip installed in
        # editable mode from another checkout (a pinned worktree's runs must
        # run the worktree's code)
        path = os.environ.get('PYTHONPATH')
        search = ROOT + (os.pathsep + path if path else '')
        env = dict(os.environ, PYTHONPATH=search)
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT, env=env)
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
    if args.record_dir and osp.isfile(_record_path(args, name, seed)):
        return _record_path(args, name, seed)
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
    commit_at_start = git_commit()
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
    mach = machine()
    meta = dict(variant=name, seed=seed, config=config, cfg_options=opts,
                checkpoint=ckpt, commit=commit_at_start,
                commit_at_end=git_commit(),
                wall_s=round(time.time() - start, 1), host=platform.node(),
                cpus=os.cpu_count(), gpus=args.gpus, machine=mach,
                machine_id=machine_id(mach),
                dataset=dataset_info(args.data_root, args.data_command))
    with atomic_open(osp.join(run_dir, 'run.json')) as f:
        json.dump(meta, f, indent=1)
    if args.record_dir:
        with open(metrics) as f:
            record = dict(metrics=json.load(f), meta=meta)
        path = _record_path(args, name, seed)
        os.makedirs(osp.dirname(path), exist_ok=True)
        with atomic_open(path) as f:
            json.dump(record, f, indent=1)
    return metrics


def _record_path(args, name: str, seed: int) -> str:
    return osp.join(args.record_dir, name, f'seed{seed}.json')


def collect(args, variants) -> Tuple[Dict, Dict]:
    runs: Dict = {}
    metas: Dict = {}
    for name in variants:
        for seed in args.seeds:
            run_dir = osp.join(args.work_dir, name, f'seed{seed}')
            path = osp.join(run_dir, 'metrics.json')
            if not osp.isfile(path):
                record = (_record_path(args, name, seed) if args.record_dir
                          else None)
                if record and osp.isfile(record):
                    with open(record) as f:
                        data = json.load(f)
                    runs.setdefault(name, {})[seed] = data['metrics']
                    metas.setdefault(name, {})[seed] = data['meta']
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
    command = 'python tools/ablation.py ' + ' '.join(argv)
    commits = sorted({m.get('commit', '?') for v in metas.values()
                      for m in v.values()})
    machines = sorted({m['machine_id'] for v in metas.values()
                       for m in v.values() if 'machine_id' in m})
    data = dict(study=args.study, command=command, commits=commits,
                machines=machines, seeds=args.seeds, baseline=args.baseline,
                margin=args.margin,
                variants={k: dict(config=c, cfg_options=o)
                          for k, (c, o) in variants.items() if k in runs},
                runs=runs, run_meta=metas)
    if args.study == 'multitask':
        data['penalty_settings'] = penalty_settings(runs)
    elif args.study == 'full':
        data['penalty_settings'] = penalty_settings(runs, {'full': ('', STUDIES['full'])})
    return write_outputs(data, osp.join(args.work_dir, args.out_name))


def write_outputs(data: Dict, base: str) -> str:
    """``base``.md / .json / .png (+ the Pareto and penalty charts of a
    study with penalty settings) from ``data`` (the JSON's content)."""
    runs = {v: {int(s): m for s, m in by_seed.items()}
            for v, by_seed in data['runs'].items()}
    data = dict(data, chart=osp.basename(base) + '.png')
    margin = data.get('margin', MARGIN)
    data['summary'] = summarize(runs, data['baseline'], margin=margin)
    if data.get('penalty_settings'):
        data['penalty'] = {
            name: penalty(runs, spec['det_only'], spec['seg_only'],
                          spec['multitask'], margin)
            for name, spec in data['penalty_settings'].items()}
        data['versus_sum'] = {
            name: versus(runs, spec.get('plain_sum', ''), spec['multitask'], margin)
            for name, spec in data['penalty_settings'].items()}
        data['versus_front'] = {
            name: versus_front(runs, spec.get('calibrations', []), spec.get('front', []),
                               margin)
            for name, spec in data['penalty_settings'].items()}
        data['penalty_change'] = penalty_trend(data['penalty_settings'], runs, margin)
    text = render_report(data)
    if data.get('penalty_settings'):
        pareto_chart(runs, data['penalty_settings'], base + '_pareto.png')
        penalty_chart(runs, data['penalty_settings'], base + '_penalty.png',
                      margin)
    with atomic_open(base + '.md') as f:
        f.write(text)
    with atomic_open(base + '.json') as f:
        json.dump(data, f, indent=1, sort_keys=False)
    plot(data['summary'], base + '.png')
    print(text)
    return base + '.md'


def rerender(path: str) -> str:
    """Re-render a results JSON's Markdown, summary and charts in place."""
    with open(path) as f:
        data = json.load(f)
    return write_outputs(data, osp.splitext(path)[0])


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.from_json:
        return rerender(args.from_json)
    to_run, study = select_variants(args)
    if not args.report_only:
        check_pin(args)
        # seed-major order: every variant gets seed 0 before any gets seed 1,
        # so a study cut short still has paired runs to compare.
        for seed in args.seeds:
            for name, (config, options) in to_run.items():
                run_one(args, name, config, options, seed)
            write_report(args, study, argv)
    return write_report(args, study, argv)


if __name__ == '__main__':
    main()
