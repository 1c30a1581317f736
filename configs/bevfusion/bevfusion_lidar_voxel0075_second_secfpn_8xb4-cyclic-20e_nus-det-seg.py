# Stage 1 of BEVFusion's two-stage recipe, multi-task: the LiDAR-only model (no camera branch, no
# fuser) with the detection and map-segmentation heads on the shared BEV map. Its checkpoint
# initialises the camera + LiDAR fusion stage (*_8xb4-6e-from-lidar_*.py).
# Schedule as mmdet3d's projects/BEVFusion LiDAR-only config: AdamW, 20 epochs, cyclic lr
# (1e-4 rising to 1e-3 over 8 epochs, then down to 1e-8) and momentum (beta1) cycled the other way;
# 8 GPUs x 4 samples. Not reproduced: the reference's GT-paste augmentation (ObjectSample, stopped
# at epoch 15), which needs a ground-truth database this project does not build.
_base_ = ['./bevfusion_lidar-cam_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det-seg.py']

model = dict(img_backbone=None, img_neck=None, view_transform=None, fuser=None)

# the camera-free pipelines: the base pipelines without image loading and image augmentation
modality = dict(use_lidar=True, use_camera=False)
train_pipeline = [
    t for t in _base_.train_pipeline if t['type'] not in ('LoadMultiViewImages', 'ImageAug3D')
]
train_pipeline[-1] = dict(type='PackMultiTaskInputs',
                          keys=['points', 'gt_bboxes_3d', 'gt_labels_3d', 'gt_masks_bev'])
test_pipeline = [
    t for t in _base_.test_pipeline if t['type'] not in ('LoadMultiViewImages', 'ImageAug3D')
]
test_pipeline[-1] = dict(type='PackMultiTaskInputs', keys=['points', 'gt_masks_bev'])
train_dataloader = dict(dataset=dict(dataset=dict(pipeline=train_pipeline, modality=modality)))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline, modality=modality))
test_dataloader = val_dataloader
val_evaluator = [dict(_base_.val_evaluator[0], modality=modality), _base_.val_evaluator[1]]
test_evaluator = val_evaluator

lr = 1e-4
max_epochs = 20
warm_epochs = 8  # lr rises for 8 epochs, then falls for the remaining 12
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='CosineAnnealingLR', T_max=warm_epochs, eta_min=lr * 10, begin=0,
         end=warm_epochs, by_epoch=True, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - warm_epochs, eta_min=lr * 1e-4,
         begin=warm_epochs, end=max_epochs, by_epoch=True, convert_to_iter_based=True),
    dict(type='CosineAnnealingMomentum', T_max=warm_epochs, eta_min=0.85 / 0.95, begin=0,
         end=warm_epochs, by_epoch=True, convert_to_iter_based=True),
    dict(type='CosineAnnealingMomentum', T_max=max_epochs - warm_epochs, eta_min=1,
         begin=warm_epochs, end=max_epochs, by_epoch=True, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=max_epochs)
