"""Two CUDA ranks on NCCL apply the same FULLER weights: the DDP toy of
tests/test_calibration/test_ddp.py (one GPU per rank, float64) against its
single-process expectation. Needs two GPUs; skipped with the reason
otherwise.
"""

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from fuller.testing import cuda_marks, run_ranks
from fuller.testing import REPO_ROOT, load_script

pytestmark = cuda_marks(min_devices=2)
WORLD = 2


def _ddp_module():
    path = REPO_ROOT / 'tests' / 'test_calibration' / 'test_ddp.py'
    return load_script(path, 'fuller_test_ddp')


def _worker(rank, out_dir):
    ddp = _ddp_module()
    torch.cuda.set_device(rank)  # before the group: NCCL binds to it
    dist.init_process_group('nccl', init_method='env://', rank=rank,
                            world_size=WORLD)
    device = torch.device('cuda', rank)
    model = DistributedDataParallel(ddp.Toy().double().to(device),
                                    device_ids=[rank])
    data = {k: v.to(device) for k, v in ddp.rank_data(rank).items()}
    losses, _ = model(data)
    sum(losses.values()).backward()
    stats = model.module.grad_calibrator.last_stats
    torch.save(dict(
        alpha=[float(stats['task']['alpha'][t]) for t in ddp.TASKS],
        scale=[float(stats['modality']['scale'][m])
               for m in ('camera', 'lidar')],
        grads={n: p.grad.cpu() for n, p in model.module.named_parameters()}),
        f'{out_dir}/rank{rank}.pt')


def test_nccl_ranks_apply_identical_weights(tmp_path):
    run_ranks(_worker, args=(str(tmp_path), ), world_size=WORLD, backend=None)
    results = [torch.load(tmp_path / f'rank{r}.pt') for r in range(WORLD)]
    assert results[0]['alpha'] == results[1]['alpha']
    assert results[0]['scale'] == results[1]['scale']
    alpha, _, scale, grads = _ddp_module()._single_process_expectation()
    np.testing.assert_allclose(results[0]['alpha'], alpha, rtol=1e-5)
    np.testing.assert_allclose(results[0]['scale'], scale, rtol=1e-5)
    for name, grad in grads.items():
        for result in results:
            torch.testing.assert_close(result['grads'][name], grad,
                                       rtol=1e-5, atol=1e-10, msg=name)
