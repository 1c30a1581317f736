# BEVFusion-style camera + LiDAR multi-task baseline: detection + map segmentation trained with the
# plain summed loss (fixed loss weights). BEVFusion's published sizes; 8 GPUs x 4 samples.
_base_ = [
    '../_base_/models/bevfusion_multitask.py',
    '../_base_/datasets/nus_multitask.py',
    '../_base_/schedules/cyclic_20e.py',
    '../_base_/default_runtime.py',
]
