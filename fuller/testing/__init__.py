"""Input builders, model builders and device scaffolding shared by tests
and benchmarks (as mmdet3d.testing)."""
from .data_utils import (make_multitask_batch, make_multitask_data,
                         make_multitask_sample, model_sample_kwargs)
from .devices import cuda_marks, exact_float32, one_thread
from .models import build_model_from_config, quiet_init_weights
from .multiprocess import RanksFailed, run_ranks
from .repo import (REPO_ROOT, SHARED_REAL, load_script,
                   real_nuscenes_missing)

__all__ = [
    'make_multitask_sample', 'make_multitask_data', 'make_multitask_batch',
    'model_sample_kwargs', 'build_model_from_config', 'quiet_init_weights',
    'cuda_marks', 'exact_float32', 'one_thread', 'run_ranks', 'RanksFailed', 'REPO_ROOT',
    'SHARED_REAL', 'load_script', 'real_nuscenes_missing'
]
