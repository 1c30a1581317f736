"""How much each calibration level changes the update, under AdamW and SGD.

From the same initial weights and the same fixed batches, N training steps
are run per (optimiser, variant); the total parameter change of every
parameter group, ``dW = W_N - W_0``, is compared with that of a reference
run of the same optimiser:

    rel_change = |dW_variant - dW_ref| / |dW_ref|
    step_ratio = |dW_variant| / |dW_ref|

Variants (``VARIANTS``; reference in brackets):

``off``            both levels off: the plain summed loss (the reference).
``off_repeat``     ``off`` again [off]: the run-to-run noise floor.
``task``           IMTL-G at the shared map, task_magnitude='weights' [off].
``task_summag``    IMTL-G, task_magnitude='sum' [task]: what the magnitude
                   option alone changes.
``modality``       modality level, gradient form [off].
``modality_step``  modality level, step form (``step_scaling``) [off].
``both``           FULLER: task + modality, gradient form [off].
``loss_x2``        both levels off, the summed loss doubled [off]: a
                   control. SGD's step doubles; an ideal scale-free
                   optimiser would not move, so what AdamW shows here (eps,
                   clipping, and the trajectory drifting apart once any
                   update differs) is its floor for "acts on the update".

Parameter groups: camera (image backbone, neck, view transform), lidar (voxel
and sparse encoders), trunk (fuser, decoder), head_det, head_seg. Also
reported per run: the mean per-step |delta W| of each group and the mean of
the calibrator's factors (alpha_det, the camera modality factor).

Model and data: fuller's tiny MultiTaskBEVFusion
(``configs/_base_/models/bevfusion_multitask_tiny.py``) in train mode, and
``--num-batches`` fixed batches of the hand-made samples of
``fuller.testing`` (batch i = samples 2i, 2i+1), cycled. Each run starts
from the same state dict and RNG seed. Optimisers as the configs: AdamW
(lr of the tiny FULLER config, weight decay 0.01) and SGD (momentum 0.9,
weight decay 0.01), gradient clipping at max_norm 35 for both.

Usage::

    python tools/analysis/optimizer_probe.py --out-dir work_dirs/probe \
        [--steps 12] [--optimizers adamw sgd] [--variants off modality ...]

Writes ``optimizer_probe.json`` and ``optimizer_probe.md`` (atomically).
"""
import argparse
import copy
import json
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Dict, List, Optional

# name -> (calibrator settings, reference variant)
VARIANTS = {
    'off': (dict(enable_task=False, enable_modality=False), None),
    'off_repeat': (dict(enable_task=False, enable_modality=False), 'off'),
    'task': (dict(enable_task=True, enable_modality=False), 'off'),
    'task_summag': (dict(enable_task=True, enable_modality=False,
                         task_magnitude='sum'), 'task'),
    'modality': (dict(enable_task=False, enable_modality=True), 'off'),
    'modality_step': (dict(enable_task=False, enable_modality=True,
                           modality_mode='step'), 'off'),
    'both': (dict(enable_task=True, enable_modality=True), 'off'),
    'loss_x2': (dict(enable_task=False, enable_modality=False,
                     loss_scale=2.0), 'off'),
}
CLIP_MAX_NORM = 35.0
DEFAULT_LR = dict(adamw=2e-3, sgd=1e-2)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out-dir', default='work_dirs/optimizer_probe')
    parser.add_argument('--steps', type=int, default=12)
    parser.add_argument('--num-batches', type=int, default=4)
    parser.add_argument('--optimizers', nargs='+', default=['adamw', 'sgd'],
                        choices=['adamw', 'sgd'])
    parser.add_argument('--variants', nargs='+', default=None,
                        choices=list(VARIANTS))
    parser.add_argument('--adamw-lr', type=float, default=DEFAULT_LR['adamw'])
    parser.add_argument('--sgd-lr', type=float, default=DEFAULT_LR['sgd'])
    parser.add_argument('--clip-max-norm', type=float, default=CLIP_MAX_NORM,
                        help='gradient clipping as the configs (35); 0: off')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--device', default='cpu')
    return parser


if __name__ == '__main__':
    build_parser().parse_args()  # `--help` and argument errors before the imports below

import torch  # noqa: E402

from fuller.calibration.calibration_hook import BEVFUSION_PARAM_PREFIXES  # noqa: E402
from fuller.calibration.step_scaling import (BranchStepScaler,  # noqa: E402
                                             group_parameters)
from fuller.utils.io import atomic_open  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY_MODEL = REPO / 'configs' / '_base_' / 'models' / \
    'bevfusion_multitask_tiny.py'
GROUP_PREFIXES = dict(BEVFUSION_PARAM_PREFIXES, head_det=('heads.det.', ),
                      head_seg=('heads.seg.', ))
WEIGHT_DECAY = 0.01


def build_tiny(seed: int, device: str):
    """The tiny MultiTaskBEVFusion with a (configurable) calibrator."""
    from fuller.utils.config_utils import load_config
    from mmengine.registry import init_default_scope

    import fuller  # noqa: F401  (registers the modules)
    from mmdet3d.registry import MODELS
    init_default_scope('mmdet3d')
    cfg = copy.deepcopy(load_config(str(TINY_MODEL)).model)
    cfg.grad_calibrator = dict(task_method='imtl_g', modality_target='mean')
    torch.manual_seed(seed)
    model = MODELS.build(cfg).to(device)
    model.init_weights()
    return model.train()


def make_batches(model, num_batches: int) -> List[dict]:
    from fuller.testing import make_multitask_batch
    return [make_multitask_batch(model, seeds=(2 * i, 2 * i + 1))
            for i in range(num_batches)]


def make_optimizer(name: str, params, lr: float):
    if name == 'adamw':
        return torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY)
    if name == 'sgd':
        return torch.optim.SGD(params, lr=lr, momentum=0.9,
                               weight_decay=WEIGHT_DECAY)
    raise ValueError(f'tools/analysis/optimizer_probe.py: unknown optimiser '
                     f'{name!r}; choose adamw or sgd')


def _flat(params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).double().cpu() for p in params])


def run_variant(model, init_state: dict, batches: List[dict], groups: dict,
                optim_name: str, lr: float, variant: str, steps: int,
                seed: int, clip_max_norm: float = CLIP_MAX_NORM) -> dict:
    """Train ``steps`` steps; -> total dW per group and per-step stats.

    ``clip_max_norm`` <= 0 trains without gradient clipping."""
    settings, _ = VARIANTS[variant]
    model.load_state_dict(init_state)
    cal = model.grad_calibrator
    cal.enable_task = settings['enable_task']
    cal.enable_modality = settings['enable_modality']
    cal.task_magnitude = settings.get('task_magnitude', 'weights')
    cal.modality_mode = settings.get('modality_mode', 'grad')
    cal.step, cal.pending_step_scales = 0, None
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(optim_name, params, lr)
    scaler = None
    if cal.modality_mode == 'step':
        scaler = BranchStepScaler(cal, {m: groups[m] for m in
                                        cal.modality_names}).attach(optimizer)
    start = {g: _flat(ps) for g, ps in groups.items()}
    step_norms = {g: [] for g in groups}
    factors = dict(alpha_det=[], scale_camera=[])
    grad_norms = []  # total gradient norm of each step, before clipping
    tic = time.perf_counter()
    try:
        for it in range(steps):
            cal.record_stats = True
            before = {g: _flat(ps) for g, ps in groups.items()}
            data = copy.deepcopy(batches[it % len(batches)])
            loss, _ = model.parse_losses(model(**data, mode='loss'))
            loss = loss * settings.get('loss_scale', 1.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(
                params, clip_max_norm if clip_max_norm > 0 else math.inf)))
            optimizer.step()
            for g, ps in groups.items():
                step_norms[g].append(float((_flat(ps) - before[g]).norm()))
            stats = cal.scalar_stats()
            factors['alpha_det'].append(stats.get('calib/alpha/det'))
            factors['scale_camera'].append(stats.get(
                'calib/step_scale/camera', stats.get('calib/scale/camera')))
    finally:
        if scaler is not None:
            scaler.detach()
        cal.record_stats = False
    delta = {g: _flat(ps) - start[g] for g, ps in groups.items()}
    return dict(
        delta=delta, seconds=time.perf_counter() - tic,
        norm_total={g: float(d.norm()) for g, d in delta.items()},
        mean_step={g: sum(v) / len(v) for g, v in step_norms.items()},
        median_grad_norm=statistics.median(grad_norms),
        clipped_steps=sum(n > clip_max_norm > 0 for n in grad_norms),
        mean_factors={k: (sum(v) / len(v) if v and None not in v else None)
                      for k, v in factors.items()})


def compare(runs: Dict[str, dict]) -> Dict[str, dict]:
    """rel_change and step_ratio of every variant against its reference."""
    out = {}
    for variant, run in runs.items():
        ref_name = VARIANTS[variant][1]
        if ref_name is None or ref_name not in runs:
            continue
        ref = runs[ref_name]['delta']
        out[variant] = dict(reference=ref_name, groups={
            g: dict(rel_change=float((d - ref[g]).norm() / ref[g].norm()),
                    step_ratio=float(d.norm() / ref[g].norm()))
            for g, d in run['delta'].items()})
    return out


def markdown(report: dict) -> str:
    groups = list(GROUP_PREFIXES)
    lines = [
        '| optimiser | variant [reference] | ' + ' | '.join(groups) + ' |',
        '|---|---|' + '---|' * len(groups)]
    for optim, res in report['results'].items():
        for variant, cmp in res['comparison'].items():
            cells = [f"{100 * cmp['groups'][g]['rel_change']:.1f} % "
                     f"(x{cmp['groups'][g]['step_ratio']:.2f})"
                     for g in groups]
            lines.append(f"| {optim} | {variant} [{cmp['reference']}] | " +
                         ' | '.join(cells) + ' |')
    clip = report['clip_max_norm']
    lines += ['', 'Cells: |dW - dW_ref| / |dW_ref| of the total update after '
              f"{report['steps']} steps (x |dW| / |dW_ref|); gradient "
              'clipping ' + (f'at max_norm {clip:g}' if clip > 0 else 'off') +
              '.', '',
              '| optimiser | variant | ' + ' | '.join(
                  f'mean step {g}' for g in groups) +
              ' | alpha_det | camera factor | median grad norm | clipped '
              'steps |',
              '|---|---|' + '---|' * (len(groups) + 4)]
    for optim, res in report['results'].items():
        for variant, run in res['runs'].items():
            fac = run['mean_factors']
            cells = [f"{run['mean_step'][g]:.3g}" for g in groups]
            cells += ['-' if fac[k] is None else f'{fac[k]:.3g}'
                      for k in ('alpha_det', 'scale_camera')]
            cells += [f"{run['median_grad_norm']:.3g}",
                      f"{run['clipped_steps']}/{report['steps']}"]
            lines.append(f'| {optim} | {variant} | ' + ' | '.join(cells) +
                         ' |')
    return '\n'.join(lines) + '\n'


def probe(steps: int = 12, num_batches: int = 4,
          optimizers: Optional[List[str]] = None,
          variants: Optional[List[str]] = None, seed: int = 0,
          device: str = 'cpu', lrs: Optional[Dict[str, float]] = None,
          clip_max_norm: float = CLIP_MAX_NORM) -> dict:
    """Run the probe; -> the report (json-able)."""
    optimizers = optimizers or ['adamw', 'sgd']
    variants = variants or list(VARIANTS)
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f'tools/analysis/optimizer_probe.py: unknown '
                         f'variants {unknown}; choose from {list(VARIANTS)}')
    needed = set(variants)
    for v in variants:  # references run too
        ref = VARIANTS[v][1]
        while ref is not None:
            needed.add(ref)
            ref = VARIANTS[ref][1]
    order = [v for v in VARIANTS if v in needed]
    lrs = dict(DEFAULT_LR, **(lrs or {}))
    model = build_tiny(seed, device)
    init_state = copy.deepcopy(model.state_dict())
    batches = make_batches(model, num_batches)
    groups = group_parameters(model, GROUP_PREFIXES)
    report = dict(steps=steps, num_batches=num_batches, seed=seed,
                  device=device, lr=lrs, weight_decay=WEIGHT_DECAY,
                  clip_max_norm=clip_max_norm, machine=platform.platform(),
                  torch=torch.__version__,
                  threads=torch.get_num_threads(), results={})
    for optim in optimizers:
        runs = {}
        for variant in order:
            runs[variant] = run_variant(model, init_state, batches, groups,
                                        optim, lrs[optim], variant, steps,
                                        seed, clip_max_norm)
            print(f'[probe] {optim} {variant}: '
                  f"{runs[variant]['seconds']:.1f} s", flush=True)
        comparison = compare(runs)
        report['results'][optim] = dict(
            comparison={v: comparison[v] for v in variants
                        if v in comparison},
            runs={v: {k: r[k] for k in ('norm_total', 'mean_step',
                                        'mean_factors', 'median_grad_norm',
                                        'clipped_steps', 'seconds')}
                  for v, r in runs.items()})
    return report


def main(argv: Optional[List[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps < 1 or args.num_batches < 1:
        parser.error('--steps and --num-batches must be >= 1')
    report = probe(args.steps, args.num_batches, args.optimizers,
                   args.variants, args.seed, args.device,
                   dict(adamw=args.adamw_lr, sgd=args.sgd_lr),
                   args.clip_max_norm)
    out = Path(args.out_dir)
    with atomic_open(str(out / 'optimizer_probe.json')) as f:
        json.dump(report, f, indent=2)
    text = markdown(report)
    with atomic_open(str(out / 'optimizer_probe.md')) as f:
        f.write(text)
    print(text)


if __name__ == '__main__':
    main()
