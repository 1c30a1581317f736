# Stage 2 of the two-stage recipe for FULLER: camera (Swin-T) + LiDAR with FULLER's gradient
# calibration and light heads, initialised from FULLER's LiDAR-only stage and trained 6 epochs
# (BEVFusion's fusion-stage schedule). From mmdet3d's published BEVFusion LiDAR-only checkpoint:
#   python tools/convert_checkpoint.py bevfusion_lidar_....pth checkpoints/lidar_fuller.pth
#   python tools/train.py THIS_CONFIG --load-from checkpoints/lidar_fuller.pth \
#       --load-allow-shape-mismatch 'heads.det.*'
# (FULLER's detection head is narrower than BEVFusion's, so only its encoder and decoder weights
# fit; load_report.json in the work dir lists every skipped key with both shapes.)
_base_ = ['../bevfusion/bevfusion_lidar-cam-swint_voxel0075_second_secfpn_8xb4-6e-from-lidar_nus-det-seg.py']  # noqa: E501

lidar_checkpoint = ('work_dirs/fuller_lidar_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det-seg/'
                    'epoch_20.pth')
model = dict(
    grad_calibrator=dict(task_method='imtl_g', modality_target='mean'),
    det_head=dict(hidden_channels=64, num_heads=4, ffn_channels=128, head_conv=32),
    seg_head=dict(channels=384))
custom_hooks = [
    dict(h, checkpoint=lidar_checkpoint) if h['type'] == 'PartialCheckpointLoadHook' else h
    for h in _base_.custom_hooks
] + [dict(type='GradientCalibrationHook', warmup_iters=500)]
