"""One-sample inference (as ``mmdet3d.apis``): ``init_model`` then
``inference_multitask`` -> :class:`MultiTaskResult` (boxes and map masks)."""
from .inference import (GT_STEPS, MultiTaskResult, build_sample_parser,
                        inference_multitask, init_model, load_info,
                        sample_from_files)

__all__ = ['MultiTaskResult', 'init_model', 'inference_multitask',
           'load_info', 'sample_from_files', 'build_sample_parser', 'GT_STEPS']
