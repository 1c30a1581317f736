# Single-task detection baseline at trunk width 128 (as bevfusion_tiny-det at width 64).
_base_ = ['./bevfusion_tiny-w128_1xb2-24e_synthetic-nus.py']

model = dict(seg_head=None)
val_evaluator = [_base_.val_evaluator[0]]  # the nuScenes detection metric only
test_evaluator = val_evaluator
