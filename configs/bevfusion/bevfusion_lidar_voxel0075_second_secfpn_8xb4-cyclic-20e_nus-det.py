# Stage 1 of BEVFusion's two-stage recipe, detection only: the LiDAR-only TransFusion detector, the
# model mmdet3d's projects/BEVFusion publishes a checkpoint of (convert it with
# tools/convert_checkpoint.py). Same schedule as the det-seg LiDAR-only stage.
_base_ = ['./bevfusion_lidar_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det-seg.py']

model = dict(seg_head=None)

train_pipeline = [t for t in _base_.train_pipeline if t['type'] != 'LoadBEVMapMasks']
train_pipeline[-1] = dict(type='PackMultiTaskInputs',
                          keys=['points', 'gt_bboxes_3d', 'gt_labels_3d'])
test_pipeline = [t for t in _base_.test_pipeline if t['type'] != 'LoadBEVMapMasks']
test_pipeline[-1] = dict(type='PackMultiTaskInputs', keys=['points'])
train_dataloader = dict(dataset=dict(dataset=dict(pipeline=train_pipeline, with_map=False)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline, with_map=False))
test_dataloader = val_dataloader
val_evaluator = [_base_.val_evaluator[0]]
test_evaluator = val_evaluator
