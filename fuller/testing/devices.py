"""Scaffolding of the CUDA tests: the marks that collect a CUDA test
everywhere and skip it with the reason, and exact float32 on CUDA. pytest is
imported only when the marks are asked for, so tools may import
:mod:`fuller.testing` without it.
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
