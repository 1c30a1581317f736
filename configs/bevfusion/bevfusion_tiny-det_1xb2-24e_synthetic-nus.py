# Single-task baseline of the ablation study: the tiny model with detection only (no map head),
# same data, schedule and budget as the multi-task runs.
_base_ = ['./bevfusion_tiny_1xb2-24e_synthetic-nus.py']

model = dict(seg_head=None)
val_evaluator = [_base_.val_evaluator[0]]  # the nuScenes detection metric only
test_evaluator = val_evaluator
