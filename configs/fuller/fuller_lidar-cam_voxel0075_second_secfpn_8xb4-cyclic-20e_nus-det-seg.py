# FULLER: the BEVFusion multi-task model trained with multi-level gradient calibration
# (IMTL-G inter-gradient calibration at the shared BEV map, modality magnitude calibration at the
# fuser inputs) and FULLER's lightweight task heads (about 40% fewer head parameters:
# tools/analysis/model_stats.py reports the numbers).
# task_magnitude='sum': IMTL-G's direction with the plain sum's length. In the project's ablation study
# (docs/study/, 3 seeds, tiny model) it beat IMTL-G's published weights (weights summing to one) on both
# detection and map segmentation; neither beat the plain sum on detection (README, "What the study shows").
_base_ = ['../bevfusion/bevfusion_lidar-cam_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det-seg.py']

model = dict(
    grad_calibrator=dict(task_method='imtl_g', modality_target='mean', task_magnitude='sum'),
    det_head=dict(hidden_channels=64, num_heads=4, ffn_channels=128, head_conv=32),
    seg_head=dict(channels=384))
custom_hooks = _base_.custom_hooks + [dict(type='GradientCalibrationHook', warmup_iters=500)]
