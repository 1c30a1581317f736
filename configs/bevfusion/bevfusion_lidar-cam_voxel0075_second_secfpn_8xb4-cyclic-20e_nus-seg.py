# Single-task baseline on the same schedule: BEV map segmentation only (no detection head).
_base_ = ['./bevfusion_lidar-cam_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det-seg.py']

model = dict(det_head=None)
val_evaluator = [dict(type='BEVMapIoUMetric')]
test_evaluator = val_evaluator
