"""Building blocks of fuller.engine.loops, without training: the remainder of an epoch, and
the random state round trip through a weights-only checkpoint file."""
import random

import numpy as np
import pytest
import torch
from mmengine.dataset import DefaultSampler, pseudo_collate
from torch.utils.data import DataLoader

from fuller.engine.loops import (capture_random_state, remainder_loader,
                                 restore_random_state)


def _loader(num_workers=0):
    dataset = list(range(11))
    sampler = DefaultSampler(dataset, shuffle=True, seed=5)
    sampler.set_epoch(3)
    return DataLoader(dataset, batch_size=3, sampler=sampler, collate_fn=pseudo_collate,
                      num_workers=num_workers)


@pytest.mark.parametrize('skip', [0, 1, 3, 4])
def test_remainder_is_the_epoch_without_its_first_batches(skip):
    loader = _loader()
    full = [list(b) for b in loader]
    assert len(full) == 4 and sorted(sum(full, [])) == list(range(11))
    rest = remainder_loader(loader, skip)
    assert len(rest) == 4 - skip
    assert [list(b) for b in rest] == full[skip:]


def test_remainder_with_workers():
    loader = _loader(num_workers=1)
    assert [list(b) for b in remainder_loader(loader, 2)] == [list(b) for b in loader][2:]


def test_random_state_survives_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.random(), np.random.rand(3), torch.rand(2)
    torch.save(dict(meta=dict(state=capture_random_state())), tmp_path / 'c.pth')
    want = (random.random(), np.random.rand(4).tolist(), torch.rand(5).tolist(),
            np.random.randn())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_random_state(torch.load(tmp_path / 'c.pth', weights_only=True)['meta']['state'])
    assert (random.random(), np.random.rand(4).tolist(), torch.rand(5).tolist(),
            np.random.randn()) == want
