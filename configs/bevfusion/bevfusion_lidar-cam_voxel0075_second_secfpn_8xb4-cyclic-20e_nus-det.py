# Single-task baseline on the same schedule: detection only (the map head is switched off).
_base_ = ['./bevfusion_lidar-cam_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det-seg.py']

model = dict(seg_head=None)
val_evaluator = [dict(type='NuScenesMetric', data_root={{_base_.data_root}},
                      ann_file={{_base_.data_root}} + 'nuscenes_infos_val.pkl',
                      metric='bbox', modality={{_base_.modality}})]
test_evaluator = val_evaluator
