"""Train-step cost of FULLER's one-backward calibration, measured in one run.

Three ways to run the same forward + backward (no optimiser step):

``sum``       plain summed loss, calibration off (the baseline);
``fuller``    calibration on, one backward (TaskGradCalibration and
              ModalityGradCalibration inside autograd);
``explicit``  the usual explicit implementation: detach the shared feature and
              the fuser inputs, one ``torch.autograd.grad`` per task w.r.t. the
              shared feature (plus its head's parameters), combine on the
              host with the same weights, backward the trunk, rescale the
              modality gradients, backward the branches.

Modes are interleaved per iteration and timed with ``time.perf_counter``
(``torch.cuda.synchronize`` on CUDA); ratios to ``sum`` come from the same
run. The last iteration also reports the largest difference between the
``fuller`` and ``explicit`` parameter gradients (they must agree).

``run(model_builder=None)`` uses the stand-in model below. For a real model,
pass ``model_builder`` returning ``(model, compute_losses)``: ``model`` owns
``grad_calibrator`` and calls ``split_shared``/``calibrate_modalities`` in its
training forward; ``compute_losses(model)`` runs one training forward on a
fixed batch and returns ``{task: scalar loss}`` (e.g. sums of the
``loss/<task>/...`` terms).

Shape shorthand of the stand-in: B batch, C channels, Y x X BEV cells
(non-square), K = 2 tasks (det, seg).
"""
import argparse
import json
import statistics
import time
from typing import Callable, Dict, Optional, Tuple


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', choices=['tiny', 'stand-in'],
                        default='tiny', help="fuller's tiny multi-task model "
                        'or a small stand-in conv model')
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    return parser


if __name__ == '__main__':
    build_parser().parse_args()  # `--help` and argument errors before the imports below

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from fuller.calibration.calibrator import GradientCalibrator  # noqa: E402
from fuller.calibration.task_weights import (compute_task_weights,  # noqa: E402
                                             modality_scales)

Builder = Callable[[], Tuple[nn.Module, Callable[[nn.Module],
                                                 Dict[str, Tensor]]]]


class StandInFusion(nn.Module):
    """Camera/LiDAR conv branches -> concat fuser -> trunk -> det/seg heads."""

    def __init__(self, channels: int = 32):
        super().__init__()
        c = channels

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1),
                                 nn.BatchNorm2d(cout), nn.ReLU())

        self.camera = nn.Sequential(block(3, c), block(c, c))
        self.lidar = nn.Sequential(block(4, c), block(c, c))
        self.fuser = block(2 * c, c)
        self.trunk = nn.Sequential(block(c, c), block(c, c))
        self.heads = nn.ModuleDict(dict(
            det=nn.Sequential(block(c, c), nn.Conv2d(c, 10, 1)),
            seg=nn.Sequential(block(c, c), nn.Conv2d(c, 6, 1))))
        self.grad_calibrator = GradientCalibrator()

    def forward(self, batch: Dict[str, Tensor]) -> Dict[str, Tensor]:
        cal = self.grad_calibrator
        cam, lidar = cal.calibrate_modalities(self.camera(batch['cam']),
                                              self.lidar(batch['lidar']))
        shared = self.trunk(self.fuser(torch.cat([cam, lidar], 1)))
        feats = cal.split_shared(shared, list(self.heads))
        det = self.heads['det'](feats['det'])
        seg = self.heads['seg'](feats['seg'])
        return dict(
            det=nn.functional.smooth_l1_loss(det, batch['det']),
            seg=nn.functional.binary_cross_entropy_with_logits(
                seg, batch['seg']))


def build_stand_in(batch: int = 2, channels: int = 32, y: int = 64,
                   x: int = 48, device: str = 'cpu', seed: int = 0):
    """The default ``model_builder``: (StandInFusion, compute_losses)."""
    torch.manual_seed(seed)
    model = StandInFusion(channels).to(device).train()
    gen = torch.Generator().manual_seed(seed)
    data = dict(cam=torch.randn(batch, 3, y, x, generator=gen),
                lidar=torch.randn(batch, 4, y, x, generator=gen),
                det=torch.randn(batch, 10, y, x, generator=gen),
                seg=(torch.rand(batch, 6, y, x, generator=gen) > 0.8).float())
    data = {k: v.to(device) for k, v in data.items()}
    return model, lambda m: m(data)


def _step_calibrated(model, compute_losses, enabled: bool) -> None:
    cal = model.grad_calibrator
    cal.enable_task = cal.enable_modality = enabled
    losses = compute_losses(model)
    sum(losses.values()).backward()


def _step_explicit(model, compute_losses) -> None:
    """LibMTL-style explicit per-task gradients on detached features."""
    cal = model.grad_calibrator
    taps = {}

    def split_detached(shared, task_names):
        leaf = shared.detach().requires_grad_()
        taps['shared'] = (shared, leaf)
        return {name: leaf for name in task_names}

    def modalities_detached(*feats):
        leaves = tuple(f.detach().requires_grad_() for f in feats)
        taps['modalities'] = (feats, leaves)
        return leaves

    cal.split_shared, cal.calibrate_modalities = (split_detached,
                                                  modalities_detached)
    try:
        losses = compute_losses(model)
    finally:
        del cal.split_shared, cal.calibrate_modalities
    shared, leaf = taps['shared']
    per_task = []
    for loss in losses.values():  # heads' grads accumulate; trunk untouched
        loss.backward(retain_graph=True)
        per_task.append(leaf.grad if leaf.grad is not None
                        else torch.zeros_like(leaf))
        leaf.grad = None
    flat = torch.stack([g.reshape(-1).float() for g in per_task])
    alpha = compute_task_weights(flat @ flat.T, cal.task_method).alpha
    shared.backward(sum(float(a) * g for a, g in zip(alpha, per_task)))
    feats, leaves = taps['modalities']
    grads = [lf.grad for lf in leaves]
    sq = torch.stack([g.float().pow(2).sum() for g in grads])
    scales, _ = modality_scales(sq, cal.modality_target, cal.modality_names)
    torch.autograd.backward(list(feats),
                            [g * float(s) for g, s in zip(grads, scales)])


def _timed(fn, device: torch.device) -> float:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run(model_builder: Optional[Builder] = None, iters: int = 10,
        warmup: int = 2, device: str = 'cpu') -> Dict[str, float]:
    """Median step times (s) per mode, ratios to ``sum``, grad agreement."""
    model, compute_losses = (model_builder or
                             (lambda: build_stand_in(device=device)))()
    dev = next(model.parameters()).device
    steps = dict(
        sum=lambda: _step_calibrated(model, compute_losses, False),
        fuller=lambda: _step_calibrated(model, compute_losses, True),
        explicit=lambda: _step_explicit(model, compute_losses))
    times = {mode: [] for mode in steps}
    peak = {}
    grads = {}
    for it in range(warmup + iters):
        for mode, step in steps.items():
            model.zero_grad(set_to_none=True)
            if dev.type == 'cuda':
                torch.cuda.reset_peak_memory_stats(dev)
            elapsed = _timed(step, dev)
            if it >= warmup:
                times[mode].append(elapsed)
            if dev.type == 'cuda':
                peak[mode] = torch.cuda.max_memory_allocated(dev) / 2**20
            grads[mode] = {n: p.grad.detach().clone()
                           for n, p in model.named_parameters()
                           if p.grad is not None}
    report = {f'time_{m}_s': statistics.median(t) for m, t in times.items()}
    for mode in ('fuller', 'explicit'):
        report[f'ratio_{mode}_to_sum'] = (report[f'time_{mode}_s'] /
                                          report['time_sum_s'])
        if peak:
            report[f'peak_mem_{mode}_to_sum'] = peak[mode] / peak['sum']
    report['max_abs_grad_diff_fuller_vs_explicit'] = max(
        float((grads['fuller'][n] - grads['explicit'][n]).abs().max())
        for n in grads['fuller'])
    report['iters'] = iters
    report['device'] = str(dev)
    return report


def build_tiny_multitask(device: str = 'cpu', batch: int = 2):
    """fuller's tiny MultiTaskBEVFusion (configs/_base_/models/
    bevfusion_multitask_tiny.py) with FULLER on, and a fixed hand-made
    batch (fuller.testing): the model of the README's overhead figure."""
    from pathlib import Path

    from fuller.utils.config_utils import load_config
    from mmengine.registry import init_default_scope

    import fuller  # noqa: F401
    from fuller.testing import make_multitask_batch
    from mmdet3d.registry import MODELS
    init_default_scope('mmdet3d')
    cfg_path = Path(__file__).resolve().parents[2] / 'configs' / '_base_' / \
        'models' / 'bevfusion_multitask_tiny.py'
    cfg = load_config(str(cfg_path)).model
    cfg.grad_calibrator = dict(task_method='imtl_g', modality_target='mean')
    torch.manual_seed(0)
    model = MODELS.build(cfg).to(device)
    model.init_weights()
    model.eval()  # no dropout: the three modes see identical computations
    data = make_multitask_batch(model, seeds=tuple(range(batch)))

    def compute_losses(m):
        per_task = {}
        for name, value in m(**data, mode='loss').items():
            if 'loss' in name:
                task = name.split('/')[0]
                per_task[task] = per_task.get(task, 0) + value
        return per_task

    return model, compute_losses


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    builder = None
    if args.model == 'tiny':
        builder = lambda: build_tiny_multitask(args.device)  # noqa: E731
    print(json.dumps(run(builder, iters=args.iters, warmup=args.warmup,
                         device=args.device), indent=2))


if __name__ == '__main__':
    main()
