from .hooks import RunMetaHook
from .hooks.atomic_checkpoint_hook import AtomicCheckpointHook
from .loops import ResumableEpochBasedTrainLoop, TrainStateHook

__all__ = ['RunMetaHook', 'AtomicCheckpointHook', 'ResumableEpochBasedTrainLoop',
           'TrainStateHook']
