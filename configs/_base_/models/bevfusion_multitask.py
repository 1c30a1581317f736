# BEVFusion-style camera + LiDAR multi-task model at BEVFusion's published size:
# LiDAR voxels 0.075 m over [-54, 54] m (1440 x 1440 cells) -> 180 x 180 BEV, images 256 x 704,
# ResNet-50 image backbone. The geometry and the channel counts between modules are declared once,
# below. The values that follow from them are written where modules and the data pipeline use them
# (a plain mmengine config); fuller.utils.config_utils.check_config_consistency recomputes each of
# them (fuller.structures.BEVGeometry) before any run and names every key that disagrees. After
# changing `geometry` or `channels` in a child config, `python tools/misc/sync_config.py CHILD`
# prints (or writes) the keys to change with it.
geometry = dict(
    point_cloud_range=[-54.0, -54.0, -5.0, 54.0, 54.0, 3.0],
    voxel_size=[0.075, 0.075, 0.2],
    lidar_stride=8,  # SparseEncoder downsampling -> BEV cell 0.6 m
    image_size=[256, 704],  # network input (H, W)
    image_stride=8,  # GeneralizedLSSFPN output stride
    lss_upsample=2,  # the view transform pools 0.3 m cells, then downsamples by 2
    map_grid=dict(x_range=(-50.0, 50.0), y_range=(-50.0, 50.0), cell_size=0.5))
channels = dict(
    image_features=256,  # img_neck -> view_transform
    camera_bev=80,  # view_transform -> fuser
    lidar_bev=256,  # SparseEncoder: 128 channels x 2 z cells -> fuser
    shared_in=256,  # fuser -> decoder
    shared=512)  # decoder (SECONDFPN: 2 x 256) -> heads
num_classes = 10

model = dict(
    type='MultiTaskBEVFusion',
    data_preprocessor=dict(
        # scoped: BaseModel builds it from mmengine's root registry, which finds it in
        # mmdet3d's whatever the default scope (MODELS.build(cfg.model) needs none)
        type='mmdet3d.MultiModalDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=False,
        pad_size_divisor=32,
        voxel=True,
        voxel_type='hard',
        voxel_layer=dict(
            max_num_points=10,
            point_cloud_range=geometry['point_cloud_range'],
            voxel_size=geometry['voxel_size'],
            max_voxels=[120000, 160000])),
    img_backbone=dict(
        type='mmdet.ResNet',
        depth=50,
        num_stages=4,
        out_indices=(1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    img_neck=dict(
        type='GeneralizedLSSFPN',
        in_channels=[512, 1024, 2048],
        out_channels=channels['image_features'],
        in_strides=(8, 16, 32),
        norm_cfg=dict(type='BN', requires_grad=True),
        act_cfg=dict(type='ReLU')),
    view_transform=dict(
        type='LSSViewTransform',
        in_channels=channels['image_features'],
        out_channels=channels['camera_bev'],
        image_size=geometry['image_size'],
        feature_size=[32, 88],  # image_size / image_stride
        dbound=[1.0, 60.0, 0.5],
        xbound=[-54.0, 54.0, 0.3],  # BEV x range, BEV cell / lss_upsample
        ybound=[-54.0, 54.0, 0.3],
        zbound=[-10.0, 10.0, 20.0],
        downsample=geometry['lss_upsample']),
    pts_voxel_encoder=dict(type='HardSimpleVFE', num_features=5),
    pts_middle_encoder=dict(
        type='SparseEncoder',
        in_channels=5,
        sparse_shape=[41, 1440, 1440],  # (Z + 1, Y, X) voxels
        order=('conv', 'norm', 'act'),
        norm_cfg=dict(type='BN1d', eps=1e-3, momentum=0.01),
        encoder_channels=((16, 16, 32), (32, 32, 64), (64, 64, 128), (128, 128)),
        # mmdet3d's SparseEncoder pads (z, y, x): (0, 1, 1) keeps 1440 -> 180 in x and y
        encoder_paddings=((0, 0, 1), (0, 0, 1), (0, 0, (0, 1, 1)), (0, 0)),
        block_type='basicblock'),
    fuser=dict(type='ConvFuser', in_channels=[channels['camera_bev'], channels['lidar_bev']],
               out_channels=channels['shared_in']),
    decoder=dict(
        type='BEVDecoder',
        backbone=dict(
            type='SECOND',
            in_channels=channels['shared_in'],
            out_channels=[128, 256],
            layer_nums=[5, 5],
            layer_strides=[1, 2],
            norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01),
            conv_cfg=dict(type='Conv2d', bias=False)),
        neck=dict(
            type='SECONDFPN',
            in_channels=[128, 256],
            out_channels=[256, 256],
            upsample_strides=[1, 2],
            norm_cfg=dict(type='BN', eps=1e-3, momentum=0.01),
            upsample_cfg=dict(type='deconv', bias=False),
            use_conv_for_no_stride=True)),
    det_head=dict(
        type='TransFusionDetHead',
        in_channels=channels['shared'],
        num_classes=num_classes,
        # the shared BEV map: the point-cloud range in cells of voxel_size * lidar_stride
        input_grid=dict(x_range=[-54.0, 54.0], y_range=[-54.0, 54.0], cell_size=[0.6, 0.6]),
        num_proposals=200,
        hidden_channels=128,
        num_decoder_layers=1,
        num_heads=8,
        ffn_channels=256,
        nms_kernel_size=3,
        nms_free_classes=(7, 8),  # pedestrian, traffic_cone (mmdet3d class order): keep every peak
        code_weights=(1.0, ) * 8 + (0.2, 0.2)),
    seg_head=dict(
        type='BEVMapSegHead',
        in_channels=channels['shared'],
        input_grid=dict(x_range=[-54.0, 54.0], y_range=[-54.0, 54.0], cell_size=[0.6, 0.6]),
        map_grid=dict(x_range=[-50.0, 50.0], y_range=[-50.0, 50.0], cell_size=[0.5, 0.5]),
        loss_type='focal'),
    # The plain sum. On the tiny model the map loss's weight sets the detection/map trade-off, and no
    # calibration landed beyond the weights' front (docs/study-v3): sweep `seg` (tools/ablation.py
    # --study full has the sweep) before judging a calibration.
    loss_weights=dict(det=1.0, seg=1.0))
