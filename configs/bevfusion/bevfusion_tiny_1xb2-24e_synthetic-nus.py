# The tiny CPU model on the generated dataset with the plain summed loss: the baseline of the demo
# and the ablation study. FULLER's tiny configs inherit it and add the calibration.
_base_ = [
    '../_base_/models/bevfusion_multitask_tiny.py',
    '../_base_/datasets/nus_synthetic.py',
    '../_base_/schedules/cyclic_20e.py',
    '../_base_/default_runtime.py',
]

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

default_hooks = dict(logger=dict(type='LoggerHook', interval=4),
                     checkpoint=dict(interval=1, max_keep_ckpts=2))
log_processor = dict(window_size=4)
env_cfg = dict(dist_cfg=dict(backend='gloo', timeout=1800))
