from .hooks import RunMetaHook
from .hooks.atomic_checkpoint_hook import AtomicCheckpointHook
from .loops import ResumableEpochBasedTrainLoop, TrainStateHook
from .sync_bn import (CPUSyncBatchNorm, CPUSyncBNDistributedDataParallel,
                      convert_cpu_sync_batchnorm)

__all__ = ['RunMetaHook', 'AtomicCheckpointHook', 'ResumableEpochBasedTrainLoop',
           'TrainStateHook', 'CPUSyncBatchNorm', 'CPUSyncBNDistributedDataParallel',
           'convert_cpu_sync_batchnorm']
