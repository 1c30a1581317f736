# Example of a user config: the tiny FULLER model with mmdet3d's CenterHead instead of the
# TransFusion-style query head. Only the detection head changes; `_delete_=True` drops the
# inherited head's keys. Its grid is the tiny model's geometry (the coder reads the x and y entries
# of the range and voxel size; out_size_factor is the LiDAR stride); check_config_consistency
# compares these keys with `geometry` before every run.
_base_ = ['./fuller_tiny_1xb2-24e_synthetic-nus.py']

point_cloud_range = [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]
voxel_size = [0.3, 0.3, 0.4]
out_size_factor = 4

model = dict(
    det_head=dict(
        _delete_=True,
        type='CenterHead',
        in_channels=64,  # channels.shared
        # CenterHead maps label i to the i-th name of these groups read in order, so the groups
        # must list the dataset's class_names (nus_synthetic.py) in that same order:
        # car, truck, trailer, bus, construction_vehicle, bicycle, motorcycle, pedestrian,
        # traffic_cone, barrier. tests/test_models/test_centerhead_config.py checks it.
        tasks=[
            dict(num_class=1, class_names=['car']),
            dict(num_class=2, class_names=['truck', 'trailer']),
            dict(num_class=2, class_names=['bus', 'construction_vehicle']),
            dict(num_class=2, class_names=['bicycle', 'motorcycle']),
            dict(num_class=2, class_names=['pedestrian', 'traffic_cone']),
            dict(num_class=1, class_names=['barrier']),
        ],
        common_heads=dict(reg=(2, 2), height=(1, 2), dim=(3, 2), rot=(2, 2), vel=(2, 2)),
        share_conv_channel=32,
        bbox_coder=dict(
            type='CenterPointBBoxCoder',
            pc_range=point_cloud_range,
            post_center_range=[-61.2, -61.2, -10.0, 61.2, 61.2, 10.0],
            max_num=100,
            score_threshold=0.05,
            out_size_factor=out_size_factor,
            voxel_size=voxel_size,
            code_size=9),
        separate_head=dict(type='SeparateHead', init_bias=-2.19, final_kernel=3),
        loss_cls=dict(type='mmdet.GaussianFocalLoss', reduction='mean'),
        loss_bbox=dict(type='mmdet.L1Loss', reduction='mean', loss_weight=0.25),
        norm_bbox=True,
        train_cfg=dict(
            grid_size=[360, 360, 20],  # voxels (X, Y, Z)
            voxel_size=voxel_size,
            out_size_factor=out_size_factor,
            dense_reg=1,
            gaussian_overlap=0.1,
            max_objs=500,
            min_radius=2,
            code_weights=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.2, 0.2],
            point_cloud_range=point_cloud_range),
        test_cfg=dict(
            post_center_limit_range=[-61.2, -61.2, -10.0, 61.2, 61.2, 10.0],
            max_per_img=100,
            max_pool_nms=False,
            min_radius=[4, 12, 10, 0.85, 0.175, 1],  # circle-NMS radius (m) per task group above
            score_threshold=0.05,
            out_size_factor=out_size_factor,
            voxel_size=voxel_size,
            pc_range=point_cloud_range,
            nms_type='circle',
            pre_max_size=1000,
            post_max_size=83,
            nms_thr=0.2)))
