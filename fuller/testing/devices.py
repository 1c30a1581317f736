"""Scaffolding of the device set-up of tests: the marks that collect a CUDA
test everywhere and skip it with the reason, exact float32 on CUDA, and one
CPU thread. pytest is imported only when the marks are asked for, so tools
may import :mod:`fuller.testing` without it.
"""
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


@contextmanager
def one_thread():
    """One intra-op CPU thread inside the block (golden values are recorded
    with one; tiny tensors also run faster on one thread than on several
    fighting for a loaded CPU: sparse convs were 10x slower with two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
