"""CPUSyncBatchNorm on two gloo ranks equals torch's BatchNorm on the concatenated batch:
outputs, input gradients, parameter gradients (summed over ranks, as DDP sums before it
averages) and running statistics. Ranks hold different numbers of rows (unequal voxel counts)."""
import os

import torch
from torch import nn

from fuller.engine.sync_bn import CPUSyncBatchNorm, convert_cpu_sync_batchnorm
from fuller.testing import run_ranks

WORLD = 2
ROWS = (5, 9)  # BatchNorm1d rows per rank


def _inputs():
    g = torch.Generator().manual_seed(0)
    x2d = torch.randn(WORLD * 2, 3, 4, 5, generator=g) * 3 + 1
    x1d = torch.randn(sum(ROWS), 4, generator=g) - 2
    return x2d, x1d


def _layers():
    torch.manual_seed(1)
    bn2d, bn1d = nn.BatchNorm2d(3, momentum=0.3), nn.BatchNorm1d(4, eps=1e-3)
    for bn in (bn2d, bn1d):
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -1, 1)
    return bn2d, bn1d


def _loss_weights(x2d, x1d):
    """Fixed per-element weights of the objective sum(w * y)."""
    return (torch.arange(x2d.numel(), dtype=x2d.dtype).reshape(x2d.shape).sin(),
            torch.arange(x1d.numel(), dtype=x1d.dtype).reshape(x1d.shape).cos())


def _run(bn2d, bn1d, x2d, x1d, w2d, w1d):
    x2d, x1d = x2d.clone().requires_grad_(), x1d.clone().requires_grad_()
    y2d, y1d = bn2d(x2d), bn1d(x1d)
    ((y2d * w2d).sum() + (y1d * w1d).sum()).backward()
    return y2d, y1d, x2d.grad, x1d.grad


def _worker(rank, tmp):
    torch.set_num_threads(1)
    x2d, x1d = _inputs()
    layers = nn.ModuleList(_layers())
    convert_cpu_sync_batchnorm(layers)
    assert all(isinstance(m, CPUSyncBatchNorm) for m in layers)
    w2d, w1d = _loss_weights(x2d, x1d)
    rows2d = slice(2 * rank, 2 * rank + 2)
    rows1d = slice(sum(ROWS[:rank]), sum(ROWS[:rank + 1]))
    out = _run(*layers, x2d[rows2d], x1d[rows1d], w2d[rows2d], w1d[rows1d])
    torch.save(dict(out=out, grads=[p.grad for p in layers.parameters()],
                    buffers=dict(layers.named_buffers())),
               os.path.join(tmp, f'rank{rank}.pth'))


def test_two_ranks_match_batchnorm_on_the_whole_batch(tmp_path):
    run_ranks(_worker, args=(str(tmp_path), ), world_size=WORLD)
    ranks = [torch.load(tmp_path / f'rank{r}.pth', weights_only=True) for r in range(WORLD)]
    layers = nn.ModuleList(_layers())
    want = _run(*layers, *_inputs(), *_loss_weights(*_inputs()))
    for i in range(4):  # y2d, y1d (batch split), their input gradients likewise
        got = (torch.cat([r['out'][i] for r in ranks]))
        torch.testing.assert_close(got, want[i], rtol=1e-5, atol=1e-6)
    for i, p in enumerate(layers.parameters()):
        torch.testing.assert_close(ranks[0]['grads'][i] + ranks[1]['grads'][i], p.grad,
                                   rtol=1e-5, atol=1e-5)
    for name, value in layers.named_buffers():
        for r in ranks:
            torch.testing.assert_close(r['buffers'][name], value, rtol=1e-5, atol=1e-6)


def test_single_process_and_eval_are_plain_batchnorm():
    x2d, _ = _inputs()
    bn, _ = _layers()
    sync = convert_cpu_sync_batchnorm(nn.Sequential(_layers()[0]))[0]
    torch.testing.assert_close(sync(x2d), bn(x2d))
    torch.testing.assert_close(sync.running_var, bn.running_var)
    assert int(sync.num_batches_tracked) == 1
    sync.eval(), bn.eval()
    torch.testing.assert_close(sync(x2d + 1), bn(x2d + 1))
