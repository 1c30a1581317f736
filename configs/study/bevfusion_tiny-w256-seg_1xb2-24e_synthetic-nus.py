# Single-task map baseline at trunk width 256 (as bevfusion_tiny-seg at width 64).
_base_ = ['./bevfusion_tiny-w256_1xb2-24e_synthetic-nus.py']

model = dict(det_head=None)
val_evaluator = [dict(type='BEVMapIoUMetric')]
test_evaluator = val_evaluator
