# Stage 1 of the two-stage recipe for FULLER: the LiDAR-only multi-task model with FULLER's light
# heads and inter-gradient calibration (IMTL-G at the shared BEV map; with one modality there is
# nothing to calibrate between modalities). Its checkpoint fits the FULLER fusion stage
# (fuller_lidar-cam-swint_..._8xb4-6e-from-lidar_nus-det-seg.py) key for key.
_base_ = ['../bevfusion/bevfusion_lidar_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det-seg.py']

model = dict(
    grad_calibrator=dict(task_method='imtl_g', modality_target='mean'),
    det_head=dict(hidden_channels=64, num_heads=4, ffn_channels=128, head_conv=32),
    seg_head=dict(channels=384))
custom_hooks = _base_.custom_hooks + [
    dict(type='GradientCalibrationHook', warmup_iters=500, enable_modality=False)]
