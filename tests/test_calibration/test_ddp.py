"""Two CPU ranks (gloo, spawned) with different data apply identical weights.

Each rank trains a DDP-wrapped toy fusion model on its own batch. Expected
values come from a single process: per-rank per-task gradients at the shared
feature (torch.autograd.grad), the summed Gram -> IMTL-G weights, then the
per-rank calibrated parameter gradients averaged as DDP does.
"""
import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fuller.calibration.calibrator import GradientCalibrator
from fuller.calibration.task_weights import compute_task_weights
from fuller.testing import run_ranks

TASKS = ('det', 'seg')
WORLD = 2


class Toy(nn.Module):

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.camera = nn.Conv2d(2, 3, 1)
        self.lidar = nn.Conv2d(2, 3, 1)
        self.trunk = nn.Conv2d(6, 4, 3, padding=1)
        self.heads = nn.ModuleDict(
            dict(det=nn.Conv2d(4, 1, 1), seg=nn.Conv2d(4, 2, 1)))
        self.grad_calibrator = GradientCalibrator()

    def forward(self, data, calibrate=True):
        cal = self.grad_calibrator
        cam, lidar = self.camera(data['cam']), self.lidar(data['lidar'])
        if calibrate:
            cam, lidar = cal.calibrate_modalities(cam, lidar)
        shared = torch.tanh(self.trunk(torch.cat([cam, 5 * lidar], 1)))
        feats = (cal.split_shared(shared, TASKS) if calibrate
                 else dict.fromkeys(TASKS, shared))
        losses = dict(
            det=((self.heads['det'](feats['det']) - data['t'][:, :1])**2
                 ).mean(),
            seg=(self.heads['seg'](feats['seg']) * data['t'][:, 1:]).mean())
        return losses, dict(cam=cam, lidar=lidar, shared=shared)


def rank_data(rank):
    gen = torch.Generator().manual_seed(100 + rank)
    scale = 1.0 + 3.0 * rank  # ranks differ in data and in gradient scale
    f64 = torch.float64
    return dict(cam=torch.randn(2, 2, 4, 6, generator=gen, dtype=f64),
                lidar=scale * torch.randn(2, 2, 4, 6, generator=gen, dtype=f64),
                t=torch.randn(2, 3, 4, 6, generator=gen, dtype=f64))


def _worker(rank, out_dir):
    model = DistributedDataParallel(Toy().double())
    losses, _ = model(rank_data(rank))
    sum(losses.values()).backward()
    stats = model.module.grad_calibrator.last_stats
    torch.save(dict(
        alpha=[stats['task']['alpha'][t] for t in TASKS],
        scale=[stats['modality']['scale'][m] for m in ('camera', 'lidar')],
        grads={n: p.grad for n, p in model.module.named_parameters()}),
        f'{out_dir}/rank{rank}.pt')


def _single_process_expectation():
    """Global weights from the summed Gram; DDP-averaged parameter grads."""
    model = Toy().double()
    params = dict(model.named_parameters())
    runs = []
    for rank in range(WORLD):
        losses, taps = model(rank_data(rank), calibrate=False)
        per_task = [torch.autograd.grad(losses[t], taps['shared'],
                                        retain_graph=True)[0] for t in TASKS]
        flat = torch.stack([g.reshape(-1) for g in per_task])
        runs.append((losses, taps, per_task, flat @ flat.T))
    local_alpha = [compute_task_weights(run[3], 'imtl_g').alpha.tolist()
                   for run in runs]
    alpha = compute_task_weights(sum(run[3] for run in runs), 'imtl_g').alpha
    sq = torch.zeros(2, dtype=torch.float64)
    for losses, taps, per_task, _ in runs:
        combined = sum(a * g for a, g in zip(alpha, per_task))
        g_mod = torch.autograd.grad(taps['shared'],
                                    [taps['cam'], taps['lidar']], combined,
                                    retain_graph=True)
        sq += torch.stack([g.pow(2).sum() for g in g_mod])
        taps.update(combined=combined, g_mod=g_mod)
    scale = sq.sqrt().mean() / sq.sqrt()
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    for losses, taps, _, _ in runs:
        groups = [(f'heads.{t}.', losses[t], None) for t in TASKS]
        groups += [('trunk.', taps['shared'], taps['combined']),
                   (('camera.', 'lidar.'), [taps['cam'], taps['lidar']],
                    [s * g for s, g in zip(scale, taps['g_mod'])])]
        for prefix, outputs, grad_outputs in groups:
            names = [n for n in params if n.startswith(prefix)]
            got = torch.autograd.grad(outputs, [params[n] for n in names],
                                      grad_outputs, retain_graph=True)
            for n, g in zip(names, got):
                grads[n] += g / WORLD
    return alpha.tolist(), local_alpha, scale.tolist(), grads


def test_ddp_ranks_apply_identical_weights(tmp_path):
    run_ranks(_worker, args=(str(tmp_path), ), world_size=WORLD)
    results = [torch.load(tmp_path / f'rank{r}.pt') for r in range(WORLD)]
    assert results[0]['alpha'] == results[1]['alpha']
    assert results[0]['scale'] == results[1]['scale']
    alpha, local_alpha, scale, grads = _single_process_expectation()
    np.testing.assert_allclose(results[0]['alpha'], alpha, rtol=1e-5)
    np.testing.assert_allclose(results[0]['scale'], scale, rtol=1e-5)
    for own in local_alpha:  # neither rank alone would use these weights
        assert abs(own[0] - alpha[0]) > 1e-3
    for name, grad in grads.items():
        for result in results:
            torch.testing.assert_close(result['grads'][name], grad, rtol=1e-5,
                                       atol=1e-10, msg=name)
