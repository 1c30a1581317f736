# FULLER with the sum's length (as fuller_tiny-summag at width 64) at trunk width 128.
_base_ = ['./bevfusion_tiny-w128_1xb2-24e_synthetic-nus.py']

model = dict(grad_calibrator=dict(task_method='imtl_g', modality_target='mean', task_magnitude='sum'))
custom_hooks = _base_.custom_hooks + [dict(type='GradientCalibrationHook', warmup_iters=4)]
