# Stage 2 of BEVFusion's two-stage recipe: the camera + LiDAR multi-task model with Swin-T,
# initialised from the LiDAR-only stage (bevfusion_lidar_..._nus-det-seg.py) and trained 6 epochs
# with the schedule of mmdet3d's projects/BEVFusion camera + LiDAR config (lr 2e-4: 500-iteration
# linear warm-up, cosine to 2e-7; beta1 cycled 0.95 -> 0.85 -> 0.95 in epochs 0-2.4-6).
# The LiDAR checkpoint goes through PartialCheckpointLoadHook, which logs and writes
# <work_dir>/load_report.json (loaded, missing, unexpected keys) and stops on a shape mismatch.
# Start from mmdet3d's published LiDAR-only checkpoint instead:
#   python tools/convert_checkpoint.py bevfusion_lidar_....pth checkpoints/lidar_fuller.pth
#   python tools/train.py THIS_CONFIG --load-from checkpoints/lidar_fuller.pth
_base_ = ['./bevfusion_lidar-cam-swint_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det-seg.py']

lidar_checkpoint = ('work_dirs/bevfusion_lidar_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det-seg/'
                    'epoch_20.pth')
init_allow_shape_mismatch = []  # fnmatch patterns of model keys that may differ in shape
load_from = None  # mmengine's load_from would skip mismatching tensors silently; the hook loads

lr = 2e-4
max_epochs = 6
momentum_turn = 2.4  # epoch where beta1 stops falling
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.33333333, by_epoch=False, begin=0, end=500),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=1e-3, begin=0,
         end=max_epochs, by_epoch=True, convert_to_iter_based=True),
    dict(type='CosineAnnealingMomentum', eta_min=0.85 / 0.95, begin=0, end=momentum_turn,
         by_epoch=True, convert_to_iter_based=True),
    dict(type='CosineAnnealingMomentum', eta_min=1, begin=momentum_turn, end=max_epochs,
         by_epoch=True, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)

custom_hooks = _base_.custom_hooks[:1] + [
    dict(type='PartialCheckpointLoadHook', checkpoint=lidar_checkpoint,
         allow_shape_mismatch=init_allow_shape_mismatch)] + _base_.custom_hooks[1:]
