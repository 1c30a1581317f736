"""Full-size train step and inference of the FULLER multi-task model, with
every figure a ratio against a reference measured in the same run.

Model: configs/fuller/fuller_lidar-cam_voxel0075_second_secfpn_8xb4-cyclic-
20e_nus-det-seg.py (BEVFusion's published sizes: six 256 x 704 cameras,
ResNet-50, 0.075 m voxels, 180 x 180 BEV; the image backbone is randomly
initialised, no download). ``--config tiny`` swaps in the tiny model
(configs/_base_/models/bevfusion_multitask_tiny.py, two 64 x 192 cameras)
for a quick CPU run.

Input: hand-made batches of ``fuller.testing.make_multitask_sample``
(ground-plane and box LiDAR points, random images, two boxes, a road mask),
one seed per sample, through the model's data preprocessor.

Train step (forward, one backward, AdamW step, as in training), at each
``--batches`` size, modes interleaved per iteration:

``sum``          calibration off: the plain summed loss (the reference);
``fuller``       FULLER's task and modality calibration on;
``fuller_torch`` as ``fuller`` with the pure-torch BEV pool (only where the
                 default picks the Triton pool, i.e. on CUDA).

Reported: median step time and (CUDA) peak allocated memory per mode, the
ratios fuller/sum (goal <= 1.03) and fuller_torch/fuller, and per-sample
time at the largest batch relative to batch 1.

Inference (eval, no grad, batch 1): median time per stage (preprocess incl.
voxelisation, image backbone, image neck, view transform, voxel encoder,
sparse encoder, fuser, decoder, detection head predict incl. box decoding,
segmentation head predict), each as a share of the whole.

Usage::

    python tools/benchmark.py --device cuda full_model --out full.json
    python tools/benchmarks/bench_full_model.py --config tiny --device cpu \
        --batches 1 --iters 1 --warmup 0
"""
import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', default='full',
                        help="'full' (default), 'tiny' or a config path")
    parser.add_argument('--device', help='cpu, cuda, ... (default: cuda if '
                        'available)')
    parser.add_argument('--cams', type=int,
                        help='cameras per sample (default 6; tiny: 2)')
    parser.add_argument('--batches', type=int, nargs='+', default=[1, 4])
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--skip-train', action='store_true')
    parser.add_argument('--skip-inference', action='store_true')
    parser.add_argument('--out', help='write the report here as JSON')
    return parser


if __name__ == '__main__':
    build_parser().parse_args()  # `--help` and argument errors before the imports below

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
CONFIGS = {
    'full': REPO / 'configs' / 'fuller' /
    'fuller_lidar-cam_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det-seg.py',
    'tiny': REPO / 'configs' / 'fuller' /
    'fuller_tiny_1xb2-24e_synthetic-nus.py',
}
LR = 2e-4  # AdamW, as configs/_base_/schedules/cyclic_20e.py
STAGES = (('img_backbone', 'forward'), ('img_neck', 'forward'),
          ('view_transform', 'forward'), ('pts_voxel_encoder', 'forward'),
          ('pts_middle_encoder', 'forward'), ('fuser', 'forward'),
          ('decoder', 'forward'), ('det_head', 'predict'),
          ('seg_head', 'predict'))


def build_model(config: str, device: torch.device,
                cams: Optional[int] = None):
    """(model, sample kwargs for ``make_multitask_sample``): random
    weights (no download), seed 0; images at the model's size, map masks
    on its seg head's grid."""
    from fuller.testing import build_model_from_config, model_sample_kwargs
    path = CONFIGS.get(config, config)
    model = build_model_from_config(path, device=device)
    if model.grad_calibrator is None:
        raise SystemExit(f'{path}: model.grad_calibrator is not set; the '
                         'benchmark compares FULLER with the plain sum')
    cams = cams or (2 if config == 'tiny' else 6)
    return model, model_sample_kwargs(model, num_cams=cams)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def raw_batch(batch: int, sample_kwargs: dict) -> dict:
    from fuller.testing import make_multitask_data
    return make_multitask_data(range(batch), **sample_kwargs)


def _set_mode(model, mode: str, default_impl: str) -> None:
    cal = model.grad_calibrator
    cal.enable_task = cal.enable_modality = mode != 'sum'
    model.view_transform.bev_pool_impl = ('torch' if mode == 'fuller_torch'
                                          else default_impl)


def train_steps(model, sample_kwargs: dict, batches: Sequence[int],
                device: torch.device, warmup: int, iters: int) -> dict:
    from fuller.models.view_transforms import triton_available
    model.train()
    default_impl = model.view_transform.bev_pool_impl
    modes = ['sum', 'fuller']
    if (device.type == 'cuda' and default_impl == 'auto'
            and triton_available()):
        modes.append('fuller_torch')
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR,
                                  weight_decay=0.01)
    out = {}
    for batch in batches:
        data = model.data_preprocessor(raw_batch(batch, sample_kwargs),
                                       training=True)
        times = {m: [] for m in modes}
        peak = {m: 0.0 for m in modes}
        for it in range(warmup + iters):
            for mode in modes:
                _set_mode(model, mode, default_impl)
                optimizer.zero_grad(set_to_none=True)
                if device.type == 'cuda':
                    torch.cuda.reset_peak_memory_stats(device)
                step_data = copy.deepcopy(data)
                _sync(device)
                start = time.perf_counter()
                losses = model(**step_data, mode='loss')
                sum(v for k, v in losses.items() if 'loss' in k).backward()
                optimizer.step()
                _sync(device)
                if it >= warmup:
                    times[mode].append(time.perf_counter() - start)
                    if device.type == 'cuda':
                        peak[mode] = max(peak[mode], torch.cuda.
                                         max_memory_allocated(device) / 2**20)
        _set_mode(model, 'fuller', default_impl)
        row = {f'time_{m}_s': statistics.median(t) for m, t in times.items()}
        row['ratio_fuller_to_sum'] = row['time_fuller_s'] / row['time_sum_s']
        if device.type == 'cuda':
            row.update({f'peak_mem_{m}_mib': p for m, p in peak.items()})
            row['peak_mem_fuller_to_sum'] = (peak['fuller'] /
                                             max(peak['sum'], 1e-6))
        if 'fuller_torch' in modes:
            row['ratio_fuller_torch_pool_to_triton_pool'] = (
                row['time_fuller_torch_s'] / row['time_fuller_s'])
            row['peak_mem_torch_pool_to_triton_pool'] = (
                peak['fuller_torch'] / max(peak['fuller'], 1e-6))
        out[f'batch{batch}'] = row
    if len(batches) > 1:
        lo, hi = min(batches), max(batches)
        out[f'per_sample_time_batch{hi}_to_batch{lo}'] = (
            out[f'batch{hi}']['time_fuller_s'] / hi /
            (out[f'batch{lo}']['time_fuller_s'] / lo))
    out['modes'] = modes
    return out


def _stage_modules(model) -> List[tuple]:
    found = []
    for name, method in STAGES:
        if name.endswith('_head'):
            module = model.heads[name[:-len('_head')]] if name[
                :-len('_head')] in model.heads else None
        else:
            module = getattr(model, name, None)
        if module is not None:
            found.append((name, module, method))
    return found


def inference_stages(model, sample_kwargs: dict, device: torch.device,
                     warmup: int, iters: int) -> dict:
    """Median ms per stage at batch 1, and each stage's share of the total
    (preprocess + predict)."""
    model.eval()
    raw = raw_batch(1, sample_kwargs)
    record: Dict[str, float] = {}

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            _sync(device)
            start = time.perf_counter()
            result = fn(*args, **kwargs)
            _sync(device)
            record[name] = record.get(name, 0.0) + time.perf_counter() - start
            return result
        return wrapper

    stages = _stage_modules(model)
    for name, module, method in stages:  # instance attributes shadow
        setattr(module, method, timed(name, getattr(module, method)))
    samples: Dict[str, List[float]] = {}
    try:
        for it in range(warmup + iters):
            record.clear()
            step_raw = copy.deepcopy(raw)
            _sync(device)
            start = time.perf_counter()
            with torch.no_grad():
                data = timed('preprocess', model.data_preprocessor)(
                    step_raw, training=False)
                model(**data, mode='predict')
            _sync(device)
            total = time.perf_counter() - start
            if it >= warmup:
                record['total'] = total
                for k, v in record.items():
                    samples.setdefault(k, []).append(v)
    finally:
        for name, module, method in stages:
            delattr(module, method)
    med = {k: statistics.median(v) for k, v in samples.items()}
    # what no stage covers (head glue, data-sample packing), so that the
    # shares add up to 1
    med['other'] = med['total'] - sum(v for k, v in med.items()
                                      if k != 'total')
    return dict(
        latency_ms={k: 1e3 * v for k, v in med.items()},
        share_of_total={k: v / med['total'] for k, v in med.items()
                        if k != 'total'})


def run(config: str = 'full', device: Optional[str] = None,
        batches: Sequence[int] = (1, 4), warmup: int = 2, iters: int = 5,
        skip_train: bool = False, skip_inference: bool = False,
        cams: Optional[int] = None) -> dict:
    dev = torch.device(device or ('cuda' if torch.cuda.is_available()
                                  else 'cpu'))
    if dev.type == 'cuda':
        torch.backends.cudnn.benchmark = False  # as the configs
    model, sample_kwargs = build_model(config, dev, cams)
    report = dict(
        benchmark='full_model', config=str(CONFIGS.get(config, config)
                                           ).replace(str(REPO) + '/', ''),
        device=str(dev),
        device_name=(torch.cuda.get_device_name(dev) if dev.type == 'cuda'
                     else 'cpu'),
        torch=torch.__version__, cuda=torch.version.cuda,
        cpu_threads=torch.get_num_threads(),
        bev_pool_impl_default=model.view_transform.bev_pool_impl,
        uses_triton_pool=model.view_transform._use_triton(dev),
        sample=dict(sample_kwargs), warmup=warmup, iters=iters)
    if not skip_train:
        report['train'] = train_steps(model, sample_kwargs, batches, dev,
                                      warmup, iters)
    if not skip_inference:
        report['inference_batch1'] = inference_stages(
            model, sample_kwargs, dev, warmup, max(iters, 1))
    return report


def print_report(report: dict) -> None:
    print(f"full_model {report['config']} on {report['device_name']} "
          f"(torch {report['torch']}, CUDA {report['cuda']}, Triton pool "
          f"{report['uses_triton_pool']})")
    for key, row in report.get('train', {}).items():
        if isinstance(row, dict):
            cells = ', '.join(f'{k} {v:.4g}' for k, v in row.items())
            print(f'  train {key}: {cells}')
        elif key != 'modes':
            print(f'  train {key}: {row:.3f}')
    inf = report.get('inference_batch1')
    if inf:
        print('  inference batch 1 (ms, share): ' + ', '.join(
            f'{k} {v:.1f} ({inf["share_of_total"].get(k, 1.0):.0%})'
            for k, v in inf['latency_ms'].items()))


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    report = run(args.config, args.device, args.batches, args.warmup,
                 args.iters, args.skip_train, args.skip_inference,
                 args.cams)
    print_report(report)
    if args.out:
        from fuller.utils.io import atomic_open
        with atomic_open(args.out, 'w') as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == '__main__':
    main()
