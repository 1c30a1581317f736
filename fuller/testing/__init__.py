"""Input builders shared by tests and benchmarks (as mmdet3d.testing)."""
from .data_utils import make_multitask_batch, make_multitask_sample

__all__ = ['make_multitask_sample', 'make_multitask_batch']
