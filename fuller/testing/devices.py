"""Scaffolding of the CUDA and multi-process tests: the marks that collect a
CUDA test everywhere and skip it with the reason, exact float32 on CUDA, and
a free TCP port for a process group. pytest is imported only when the marks
are asked for, so tools may import :mod:`fuller.testing` without it.
"""
import socket
from contextlib import contextmanager

import torch


def cuda_marks(min_devices: int = 1) -> list:
    """``pytestmark`` of a CUDA test module: marked ``cuda`` and skipped
    with the reason without a GPU or with fewer than ``min_devices``."""
    import pytest
    marks = [
        pytest.mark.cuda,
        pytest.mark.skipif(not torch.cuda.is_available(),
                           reason='no CUDA GPU (torch.cuda.is_available() '
                           'is False); run tools/gpu_check.sh on a GPU '
                           'machine'),
    ]
    if min_devices > 1:
        count = torch.cuda.device_count()
        marks.append(pytest.mark.skipif(
            count < min_devices, reason=f'needs {min_devices} GPUs, this '
            f'machine has {count}'))
    return marks


@contextmanager
def exact_float32():
    """No TF32 in CUDA matmuls and convolutions inside the block, so that
    CPU and CUDA results compare at float32."""
    old = (torch.backends.cuda.matmul.allow_tf32,
           torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = old


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]
