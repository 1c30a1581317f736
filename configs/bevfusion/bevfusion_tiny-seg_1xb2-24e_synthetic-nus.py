# Single-task baseline of the ablation study: the tiny model with BEV map segmentation only.
_base_ = ['./bevfusion_tiny_1xb2-24e_synthetic-nus.py']

model = dict(det_head=None)
val_evaluator = [dict(type='BEVMapIoUMetric')]
test_evaluator = val_evaluator
