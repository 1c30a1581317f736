# FULLER on the tiny CPU model and the generated dataset: what `make demo` trains and CI smoke-tests.
# Inter-gradient (IMTL-G at the shared BEV map) and intra-gradient (modality magnitude) calibration.
_base_ = [
    '../_base_/models/bevfusion_multitask_tiny.py',
    '../_base_/datasets/nus_synthetic.py',
    '../_base_/schedules/cyclic_20e.py',
    '../_base_/default_runtime.py',
]

model = dict(grad_calibrator=dict(task_method='imtl_g', modality_target='mean'))

lr = 2e-3
max_epochs = 24
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.33333, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=1e-2, begin=0,
         end=max_epochs, by_epoch=True, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
auto_scale_lr = dict(enable=False, base_batch_size=2)

custom_hooks = [
    dict(type='SparseConvAlgoHook'),
    dict(type='RunMetaHook'),
    dict(type='GradientCalibrationHook', warmup_iters=4),
]
default_hooks = dict(logger=dict(type='LoggerHook', interval=4),
                     checkpoint=dict(interval=1, max_keep_ckpts=2))
log_processor = dict(window_size=4)
env_cfg = dict(dist_cfg=dict(backend='gloo', timeout=1800))
