# FULLER on the tiny CPU model and the generated dataset: the plain-sum baseline's model, data and
# schedule with inter-gradient (IMTL-G at the shared BEV map) and intra-gradient (modality
# magnitude) calibration. CI smoke-tests it; its ablation variants inherit it.
_base_ = ['../bevfusion/bevfusion_tiny_1xb2-24e_synthetic-nus.py']

model = dict(grad_calibrator=dict(task_method='imtl_g', modality_target='mean'))
custom_hooks = _base_.custom_hooks + [dict(type='GradientCalibrationHook', warmup_iters=4)]
