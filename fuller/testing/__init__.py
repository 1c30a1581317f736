"""Input builders, model builders and device scaffolding shared by tests
and benchmarks (as mmdet3d.testing)."""
from .data_utils import (make_multitask_batch, make_multitask_data,
                         make_multitask_sample, model_sample_kwargs)
from .devices import cuda_marks, exact_float32
from .models import build_model_from_config, quiet_init_weights
from .multiprocess import RanksFailed, run_ranks

__all__ = [
    'make_multitask_sample', 'make_multitask_data', 'make_multitask_batch',
    'model_sample_kwargs', 'build_model_from_config', 'quiet_init_weights',
    'cuda_marks', 'exact_float32', 'run_ranks', 'RanksFailed'
]
