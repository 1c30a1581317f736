"""An epoch-based train loop whose resume continues exactly where the run stopped.

mmengine 0.10.7's ``EpochBasedTrainLoop`` resumes at an epoch's first batch even when the
checkpoint was written in the middle of the epoch (``CheckpointHook(by_epoch=False)``): the
batches already trained are trained again, the epoch has more iterations than ``max_iters``
counts, and the random state (data augmentation, dropout) is the fresh seed's, not the
interrupted run's. :class:`ResumableEpochBasedTrainLoop` fixes both:

* **Data order.** ``DefaultSampler`` draws an epoch's order from ``seed + epoch`` only, so the
  resumed epoch's order is the interrupted one's. The loop drops the batches the checkpoint has
  already consumed (``iter - epoch * len(dataloader)``) at the batch-sampler level, before any
  of them is loaded, and numbers the remaining ones with their original ``batch_idx``.
* **Random state.** At the start of every epoch the loop seeds Python's ``random``, NumPy and
  torch from ``(runner.seed, epoch)``; what happens between epochs (validation, which also draws
  from torch's generator when it creates its dataloader iterator) then cannot leak into the next
  epoch, and a resume from an epoch checkpoint is exact. Mid-epoch, :class:`TrainStateHook`
  stores the generators' states in every checkpoint (``meta['fuller_train_state']``) and the
  loop puts them back after it has rebuilt the epoch's data iterator. The same hook carries the
  gradient calibrator's step counter (PCGrad's task order depends on it).

Exact (bit-identical weights, optimiser state and logged losses) for single-process runs whose
dataloader has ``num_workers=0``. With worker processes the order is still exact, but the
workers' augmentation draws in the rest of the resumed epoch differ (each worker's generator
depends on which batches it loaded before). In a multi-process run every rank restores rank 0's
generator states (only rank 0 writes checkpoints).
"""
import itertools
import random
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop
from torch.utils.data import DataLoader

from mmdet3d.registry import HOOKS, LOOPS

STATE_KEY = 'fuller_train_state'
# Epoch seeds: runner.seed + EPOCH_SEED_STRIDE * epoch, modulo 2**32 (NumPy's limit).
EPOCH_SEED_STRIDE = 1_000_003


def capture_random_state() -> Dict:
    """The state of Python's ``random``, NumPy's global and torch's CPU
    (and CUDA) generators, in a form ``torch.load(weights_only=True)`` reads
    (NumPy's key array as a tensor)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = dict(python=random.getstate(),
                 numpy=(kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
                        int(has_gauss), float(cached)),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def restore_random_state(state: Dict) -> None:
    """Inverse of :func:`capture_random_state`."""
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global and torch's generators."""
    seed = seed % 2**32
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _calibrator(runner):
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    return getattr(model, 'grad_calibrator', None)


@HOOKS.register_module()
class TrainStateHook(Hook):
    """Saves the training state mmengine's checkpoints lack and hands it back
    to :class:`ResumableEpochBasedTrainLoop` on resume.

    ``checkpoint['meta']['fuller_train_state']`` holds ``random`` (see
    :func:`capture_random_state`, taken when the checkpoint is written) and
    ``calibrator_step`` (the model's ``grad_calibrator.step``, when it has
    one). The loop registers this hook itself when the config does not.
    """

    priority = 'VERY_LOW'

    def __init__(self) -> None:
        self.resumed: Optional[Dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = dict(random=capture_random_state())
        calibrator = _calibrator(runner)
        if calibrator is not None and hasattr(calibrator, 'step'):
            state['calibrator_step'] = int(calibrator.step)
        checkpoint.setdefault('meta', {})[STATE_KEY] = state

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # Also called for `load_from` (weights only); the loop uses the state
        # only when it starts at iteration > 0, i.e. after a resume.
        self.resumed = (checkpoint.get('meta') or {}).get(STATE_KEY)

    def pop_resumed(self) -> Optional[Dict]:
        state, self.resumed = self.resumed, None
        return state


class _SkipFirstBatches:
    """A batch sampler without the first ``skip`` batches of ``batch_sampler``
    (their indices are drawn and dropped; no sample is loaded)."""

    def __init__(self, batch_sampler, skip: int) -> None:
        self.batch_sampler = batch_sampler
        self.skip = skip

    def __iter__(self):
        return itertools.islice(iter(self.batch_sampler), self.skip, None)

    def __len__(self) -> int:
        return len(self.batch_sampler) - self.skip


def remainder_loader(loader: DataLoader, skip: int) -> DataLoader:
    """A one-epoch copy of ``loader`` that starts at its batch ``skip``
    (same dataset, sampler, collate function and worker settings)."""
    if loader.batch_sampler is None:
        raise ValueError('ResumableEpochBasedTrainLoop: the train dataloader has no batch '
                         'sampler (batch_size=None); cannot skip the trained batches')
    kwargs = dict(batch_sampler=_SkipFirstBatches(loader.batch_sampler, skip),
                  num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                  pin_memory=loader.pin_memory, timeout=loader.timeout,
                  worker_init_fn=loader.worker_init_fn, generator=loader.generator)
    if loader.num_workers > 0:
        kwargs.update(multiprocessing_context=loader.multiprocessing_context,
                      prefetch_factor=loader.prefetch_factor)
    return DataLoader(loader.dataset, **kwargs)


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's ``EpochBasedTrainLoop`` plus an exact mid-epoch resume and
    per-epoch seeding (see the module docstring).

    Args:
        runner: the Runner.
        dataloader: the train dataloader or its config.
        max_epochs: epochs to train.
        val_begin: first epoch after which validation runs.
        val_interval: validate every this many epochs.
        dynamic_intervals: ``[(milestone epoch, val_interval), ...]``.
    """

    def __init__(self, runner, dataloader: Union[DataLoader, Dict], max_epochs: int,
                 val_begin: int = 1, val_interval: int = 1,
                 dynamic_intervals: Optional[List[Tuple[int, int]]] = None) -> None:
        super().__init__(runner, dataloader, max_epochs, val_begin=val_begin,
                         val_interval=val_interval, dynamic_intervals=dynamic_intervals)
        hooks = [h for h in runner.hooks if isinstance(h, TrainStateHook)]
        if hooks:
            self.state_hook = hooks[0]
        else:
            self.state_hook = TrainStateHook()
            runner.register_hook(self.state_hook)

    def run(self) -> torch.nn.Module:
        if self._iter > 0:  # resumed
            state = self.state_hook.resumed or {}
            calibrator = _calibrator(self.runner)
            if 'calibrator_step' in state and calibrator is not None:
                calibrator.step = state['calibrator_step']
        return super().run()

    def run_epoch(self) -> None:
        """One epoch, or what remains of it after a mid-epoch resume."""
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        length = len(self.dataloader)
        done = self._iter - self._epoch * length
        if not 0 <= done <= length:
            raise RuntimeError(
                f'ResumableEpochBasedTrainLoop: resumed at iteration {self._iter} of epoch '
                f'{self._epoch}, but an epoch now has {length} iterations; the train set '
                'or the batch size differs from the checkpoint\'s run')
        resumed = self.state_hook.pop_resumed()
        seed_everything(self.runner.seed + EPOCH_SEED_STRIDE * self._epoch)
        if done == 0:
            batches = iter(self.dataloader)
        else:
            # creating the iterator draws from torch's generator: restore after it
            batches = iter(remainder_loader(self.dataloader, done))
            if resumed is not None:
                restore_random_state(resumed['random'])
            else:
                self.runner.logger.warning(
                    'ResumableEpochBasedTrainLoop: the checkpoint carries no random state '
                    f'(meta[{STATE_KEY!r}]); the rest of epoch {self._epoch + 1} is '
                    'trained with fresh augmentation draws')
            self.runner.logger.info(
                f'Resuming inside epoch {self._epoch + 1}: skipping its first {done} of '
                f'{length} batches (already trained)')
        for idx, data_batch in enumerate(batches, start=done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1
