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
import tempfile
import time
import traceback
from typing import Callable, Sequence

import torch.distributed as dist
import torch.multiprocessing as mp

from fuller.utils.io import atomic_open


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class RanksFailed(RuntimeError):
    """A rank raised; the message holds the traceback of the rank that
    failed first (the others usually fail because it left the group)."""


def _rank_main(rank: int, worker: Callable, world_size: int, port: int,
               backend: str, timeout_s: float, error_dir: str,
               args: tuple) -> None:
    """Body of one spawned rank: the environment a launcher would set, the
    process group (``backend=None``: the worker creates it), the worker,
    then barrier and teardown. An exception is written to
    ``error_dir/rank{rank}.txt``, with its time, before the rank leaves the
    group."""
    faulthandler.dump_traceback_later(timeout_s, exit=True)
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
                      RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    if 'lo' in (name for _, name in socket.if_nameindex()):
        # gloo's peers connect to the address the host name resolves to,
        # which a sandbox may not route; all ranks are on this machine
        os.environ.setdefault('GLOO_SOCKET_IFNAME', 'lo')
    try:
        if backend is not None:
            dist.init_process_group(
                backend, init_method='env://', rank=rank,
                world_size=world_size,
                timeout=datetime.timedelta(seconds=timeout_s))
        worker(rank, *args)
        if dist.is_initialized():
            dist.barrier()
    except BaseException:
        with atomic_open(os.path.join(error_dir, f'rank{rank}.txt'),
                         'w') as f:
            f.write(f'{time.time():.6f}\n{traceback.format_exc()}')
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        faulthandler.cancel_dump_traceback_later()


def _first_failure(error_dir: str) -> str:
    """'rank R failed first:' and its traceback, from the error files."""
    failures = []
    for name in os.listdir(error_dir):
        with open(os.path.join(error_dir, name)) as f:
            stamp, trace = f.read().split('\n', 1)
        failures.append((float(stamp), name[len('rank'):-len('.txt')], trace))
    if not failures:
        return ''
    failures.sort()
    _, rank, trace = failures[0]
    others = ', '.join(r for _, r, _ in failures[1:]) or 'none'
    return (f'rank {rank} failed first (later failures, ranks: {others}):\n'
            f'{trace}')


def run_ranks(worker: Callable,
              args: Sequence = (),
              world_size: int = 2,
              backend: str = 'gloo',
              timeout_s: float = 300.) -> None:
    """Call ``worker(rank, *args)`` on ``world_size`` spawned processes.

    ``worker`` must be importable (a module-level function). With
    ``backend=None`` the worker initialises the process group itself, from
    the launcher environment (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE,
    LOCAL_RANK) set here. Raises :class:`RanksFailed` with the traceback of
    the rank that raised first, ``torch.multiprocessing.ProcessExitedException``
    when a rank died without raising (its deadline: it has printed its stack
    to stderr), and ``TimeoutError`` when the ranks are not done
    ``timeout_s`` seconds after they start.
    """
    with tempfile.TemporaryDirectory(prefix='fuller_ranks_') as error_dir:
        try:
            _spawn_and_wait(worker, args, world_size, backend, timeout_s,
                            error_dir)
        except mp.ProcessRaisedException as exc:
            first = _first_failure(error_dir)
            if not first:
                raise
            raise RanksFailed(first) from exc


def _spawn_and_wait(worker, args, world_size, backend, timeout_s,
                    error_dir) -> None:
    # faulthandler from interpreter start: a rank stuck before _rank_main
    # (in an import, say) still prints its stack on the SIGABRT below
    saved = os.environ.get('PYTHONFAULTHANDLER')
    os.environ['PYTHONFAULTHANDLER'] = '1'
    try:
        context = mp.start_processes(
            _rank_main, nprocs=world_size, join=False, start_method='spawn',
            args=(worker, world_size, free_port(), backend, timeout_s,
                  error_dir, tuple(args)))
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
