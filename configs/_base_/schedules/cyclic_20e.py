# BEVFusion's schedule: AdamW, lr 2e-4 at 32 samples/iter (8 GPUs x 4), cyclic-ish warmup + cosine,
# 20 epochs, gradient clipping 35.
lr = 2e-4
max_epochs = 20
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=lr, weight_decay=0.01),
    clip_grad=dict(max_norm=35, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.33333, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=1e-3, begin=0,
         end=max_epochs, by_epoch=True, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict()
test_cfg = dict()
# lr above is for 8 GPUs x 4 samples; tools/train.py --auto-scale-lr rescales it linearly.
auto_scale_lr = dict(enable=False, base_batch_size=32)
