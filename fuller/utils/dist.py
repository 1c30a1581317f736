"""Distributed training on CPU-only machines.

mmengine 0.10.7's ``init_dist('pytorch')`` calls ``torch.cuda.set_device``
and its default DDP wrapper passes ``device_ids=[LOCAL_RANK]``; both fail
without a GPU. For a launched run on a machine without CUDA we initialise
the gloo process group ourselves (mmengine then skips its own init) and wrap
the model with ``device_ids=None``. ``sync_bn`` ('torch' or 'mmcv', both
CUDA-only) becomes ``CPUSyncBatchNorm`` through the
``CPUSyncBNDistributedDataParallel`` wrapper. GPU runs are untouched.
"""
import datetime
import os

import torch
import torch.distributed as dist
from mmengine.config import Config


def setup_cpu_distributed(cfg: Config) -> bool:
    """Prepare ``cfg`` (in place) for a launched run without CUDA.

    Returns True when it initialised a gloo process group.
    """
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return False
    if cfg.launcher != 'pytorch':
        raise RuntimeError(f'launcher {cfg.launcher!r} without CUDA: only '
                           'torchrun (--launcher pytorch) runs on CPU')
    dist_cfg = (cfg.get('env_cfg') or {}).get('dist_cfg') or {}
    timeout = datetime.timedelta(seconds=int(dist_cfg.get('timeout', 1800)))
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo', timeout=timeout,
                                rank=int(os.environ['RANK']),
                                world_size=int(os.environ['WORLD_SIZE']))
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    if cfg.get('sync_bn') is not None:
        if wrapper['type'] not in ('MMDistributedDataParallel',
                                   'CPUSyncBNDistributedDataParallel'):
            raise RuntimeError(
                f"sync_bn={cfg.sync_bn!r} on a CPU run needs the default model "
                f"wrapper, got model_wrapper_cfg.type={wrapper['type']!r}")
        wrapper['type'] = 'CPUSyncBNDistributedDataParallel'
        cfg.sync_bn = None  # mmengine would convert to CUDA-only SyncBN
    wrapper['device_ids'] = None
    wrapper.setdefault('broadcast_buffers', False)
    cfg.model_wrapper_cfg = wrapper
    return True
