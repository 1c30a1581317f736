# Single-task baseline on the same schedule: detection only (the map head is switched off).
_base_ = ['./bevfusion_lidar-cam_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det-seg.py']

model = dict(seg_head=None)
val_evaluator = [_base_.val_evaluator[0]]  # the nuScenes detection metric only
test_evaluator = val_evaluator
