# nuScenes, camera + LiDAR, 3D detection + BEV map segmentation, BEVFusion's data settings.
# Prepare with: python tools/create_data.py nuscenes --root-path data/nuscenes \
#                   --out-dir data/nuscenes --version v1.0-trainval
# The geometry values below (range filters, network input size, map grid) are the full model's
# (configs/_base_/models/bevfusion_multitask.py `geometry`); check_config_consistency
# (fuller.utils.config_utils) compares them with the config's `geometry` before every run, and
# every dataset and the nuScenes metric with `data_root` and `modality`.
dataset_type = 'NuScenesMultiTaskDataset'
data_root = 'data/nuscenes/'
class_names = [
    'car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle',
    'motorcycle', 'pedestrian', 'traffic_cone', 'barrier'
]
cameras = ['CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT',
           'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT']
metainfo = dict(classes=class_names, version='v1.0-trainval')
modality = dict(use_lidar=True, use_camera=True)
data_prefix = dict(pts='samples/LIDAR_TOP', sweeps='sweeps/LIDAR_TOP', map_mask_root='',
                   **{cam: f'samples/{cam}' for cam in cameras})
backend_args = None

point_cloud_range = [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]
train_pipeline = [
    dict(type='LoadNuScenesPoints', sweeps_num=9),
    dict(type='LoadMultiViewImages'),
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
    dict(type='LoadBEVMapMasks', x_range=[-50.0, 50.0], y_range=[-50.0, 50.0],
         cell_size=[0.5, 0.5]),
    dict(type='ImageAug3D', final_dim=[256, 704], resize_lim=(0.38, 0.55),
         bot_pct_lim=(0.0, 0.0), rot_lim=(-5.4, 5.4), rand_flip=True, is_train=True),
    dict(type='BEVGlobalRotScaleTrans', rot_range=(-0.78539816, 0.78539816),
         scale_ratio_range=(0.9, 1.1), translation_std=(0.5, 0.5, 0.5)),
    dict(type='BEVRandomFlip3D', flip_ratio_bev_horizontal=0.5, flip_ratio_bev_vertical=0.5),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectNameFilter', classes=class_names),
    dict(type='PointShuffle'),
    dict(type='PackMultiTaskInputs',
         keys=['points', 'img', 'gt_bboxes_3d', 'gt_labels_3d', 'gt_masks_bev']),
]
test_pipeline = [
    dict(type='LoadNuScenesPoints', sweeps_num=9, test_mode=True),
    dict(type='LoadMultiViewImages'),
    dict(type='LoadBEVMapMasks', x_range=[-50.0, 50.0], y_range=[-50.0, 50.0],
         cell_size=[0.5, 0.5]),
    dict(type='ImageAug3D', final_dim=[256, 704], resize_lim=(0.48, 0.48), is_train=False),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='PackMultiTaskInputs', keys=['points', 'img', 'gt_masks_bev']),
]
train_dataloader = dict(
    batch_size=4, num_workers=4, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='CBGSDataset',
        dataset=dict(
            type=dataset_type, data_root=data_root, ann_file='nuscenes_infos_train.pkl',
            data_prefix=data_prefix, metainfo=metainfo, modality=modality, with_det=True,
            with_map=True, box_type_3d='LiDAR', backend_args=backend_args,
            pipeline=train_pipeline, test_mode=False)))
val_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type, data_root=data_root, ann_file='nuscenes_infos_val.pkl',
        data_prefix=data_prefix, metainfo=metainfo, modality=modality, with_det=True,
        with_map=True, box_type_3d='LiDAR', backend_args=backend_args,
        pipeline=test_pipeline, test_mode=True))
test_dataloader = val_dataloader
# Leaderboard: tools/test.py --test-split (or --cfg-options test_split=True) swaps in these v1.0-test
# infos (no annotations; the pipeline then loads no ground truth); see fuller.evaluation.format_only.
test_split = False
test_split_ann_file = 'nuscenes_infos_test.pkl'
val_evaluator = [
    dict(type='NuScenesMetric', data_root=data_root,
         ann_file=data_root + 'nuscenes_infos_val.pkl', metric='bbox',
         modality=modality, backend_args=backend_args),
    dict(type='BEVMapIoUMetric'),
]
test_evaluator = val_evaluator
