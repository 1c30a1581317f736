"""Run a function on several spawned ranks of a process group, with a
deadline.

A rank that blocks (a peer that died, a gloo teardown that never returns)
must fail the test, not hang it: each rank prints its Python stack and exits
when its deadline passes (``faulthandler``), and the parent kills what is
left and raises. Ranks meet at a barrier before the group is destroyed;
tearing down while a peer is still in a collective is a known source of
hangs in ``destroy_process_group`` (pytorch/pytorch#75097).
"""
import datetime
import faulthandler
import os
import signal
import socket
import time
from typing import Callable, Sequence

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _rank_main(rank: int, worker: Callable, world_size: int, port: int,
               backend: str, timeout_s: float, args: tuple) -> None:
    """Body of one spawned rank: the environment a launcher would set, the
    process group (``backend=None``: the worker creates it), the worker,
    then barrier and teardown."""
    faulthandler.dump_traceback_later(timeout_s, exit=True)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                      RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    if backend is not None:
        dist.init_process_group(
            backend, init_method='env://', rank=rank, world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        worker(rank, *args)
        if dist.is_initialized():
            dist.barrier()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        faulthandler.cancel_dump_traceback_later()


def run_ranks(worker: Callable,
              args: Sequence = (),
              world_size: int = 2,
              backend: str = 'gloo',
              timeout_s: float = 300.) -> None:
    """Call ``worker(rank, *args)`` on ``world_size`` spawned processes.

    ``worker`` must be importable (a module-level function). With
    ``backend=None`` the worker initialises the process group itself, from
    the launcher environment (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE,
    LOCAL_RANK) set here. Raises ``torch.multiprocessing.ProcessRaisedException``
    / ``ProcessExitedException`` when a rank fails, and ``TimeoutError`` when
    the ranks are not done ``timeout_s`` seconds after they start (each rank
    has dumped its stack to stderr by then).
    """
    # faulthandler from interpreter start: a rank stuck before _rank_main
    # (in an import, say) still prints its stack on the SIGABRT below
    saved = os.environ.get('PYTHONFAULTHANDLER')
    os.environ['PYTHONFAULTHANDLER'] = '1'
    try:
        context = mp.start_processes(
            _rank_main, nprocs=world_size, join=False, start_method='spawn',
            args=(worker, world_size, free_port(), backend, timeout_s,
                  tuple(args)))
    finally:
        if saved is None:
            del os.environ['PYTHONFAULTHANDLER']
        else:
            os.environ['PYTHONFAULTHANDLER'] = saved
    deadline = time.monotonic() + timeout_s + 30  # ranks exit on their own
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            alive = [p for p in context.processes if p.is_alive()]
            for process in alive:
                os.kill(process.pid, signal.SIGABRT)  # stack to stderr
            for process in alive:
                process.join(timeout=10)
                if process.is_alive():
                    process.kill()
            raise TimeoutError(
                f'{worker.__module__}.{worker.__qualname__} on '
                f'{world_size} ranks ({backend}) not done after '
                f'{timeout_s:.0f} s; the ranks\' stacks are in stderr above')
