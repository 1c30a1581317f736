# Single-task baseline on the same schedule: detection only (the map head is switched off).
_base_ = ['./bevfusion_lidar-cam_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det-seg.py']

model = dict(seg_head=None)
# mmengine cannot concatenate a {{_base_.data_root}} reference (it stays a placeholder name), so
# the base's data_root is written out here; --data-root rewrites both keys.
val_evaluator = [dict(type='NuScenesMetric', data_root='data/nuscenes/',
                      ann_file='data/nuscenes/nuscenes_infos_val.pkl',
                      metric='bbox', modality={{_base_.modality}})]
test_evaluator = val_evaluator
