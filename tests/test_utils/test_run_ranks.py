"""fuller.testing.run_ranks: a rank that blocks or raises fails the caller
within its deadline instead of hanging it."""
import faulthandler
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fuller.testing import RanksFailed, run_ranks


def _sum_of_ranks(rank, out_dir):
    value = torch.tensor([rank + 1.0])
    dist.all_reduce(value)
    torch.save(value, f'{out_dir}/rank{rank}.pt')


def _rank0_waits_for_a_message_never_sent(rank):
    if rank == 0:
        dist.recv(torch.zeros(1), src=1)


def _rank1_sleeps_past_every_deadline(rank):
    if rank == 1:
        faulthandler.cancel_dump_traceback_later()  # as if stuck in C
        time.sleep(3600)


def _rank1_raises(rank):
    if rank == 1:
        raise ValueError('rank 1 found bad input')


def test_ranks_share_one_group(tmp_path):
    run_ranks(_sum_of_ranks, args=(str(tmp_path), ), world_size=3,
              timeout_s=120)
    for rank in range(3):
        assert torch.load(tmp_path / f'rank{rank}.pt').item() == 1 + 2 + 3


def test_a_blocked_rank_fails_within_the_deadline():
    start = time.monotonic()
    # rank 0 dumps its stack and exits at its deadline (exit code 1); rank 1
    # is then left alone at the closing barrier and exits likewise
    with pytest.raises((mp.ProcessExitedException, TimeoutError)):
        run_ranks(_rank0_waits_for_a_message_never_sent, timeout_s=20)
    assert time.monotonic() - start < 20 + 30 + 30  # deadline, grace, start


def test_the_parent_kills_a_rank_that_outlives_its_deadline():
    start = time.monotonic()
    with pytest.raises(TimeoutError, match='_rank1_sleeps_past_every_deadline'):
        run_ranks(_rank1_sleeps_past_every_deadline, timeout_s=5, backend=None)
    assert time.monotonic() - start < 5 + 30 + 10 + 30


def test_an_exception_in_a_rank_reaches_the_caller():
    # rank 0, waiting at the closing barrier, fails too when rank 1 leaves
    # the group; the caller sees rank 1's exception, whichever exit the
    # parent notices first
    with pytest.raises(RanksFailed, match='(?s)^rank 1 failed first.*'
                       'ValueError: rank 1 found bad input'):
        run_ranks(_rank1_raises, timeout_s=120)
