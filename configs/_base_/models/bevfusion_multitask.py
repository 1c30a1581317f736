# BEVFusion-style camera + LiDAR multi-task model at BEVFusion's published size:
# LiDAR voxels 0.075 m over [-54, 54] m (1440 x 1440 cells) -> 180 x 180 BEV, images 256 x 704,
# ResNet-50 image backbone. The point-cloud range, voxel size, image size and strides are written
# once here; every other grid number is derived below.
point_cloud_range = [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]
voxel_size = [0.075, 0.075, 0.2]
lidar_stride = 8  # SparseEncoder downsampling -> BEV cell = 0.6 m
image_size = [256, 704]  # network input (H, W)
image_stride = 8  # GeneralizedLSSFPN output stride
map_grid = dict(x_range=(-50.0, 50.0), y_range=(-50.0, 50.0), cell_size=0.5)
num_classes = 10

# derived: sparse grid (Z, Y, X) with mmdet3d's +1 z convention, BEV grid of the heads
sparse_shape = [
    round((point_cloud_range[5] - point_cloud_range[2]) / voxel_size[2]) + 1,
    round((point_cloud_range[4] - point_cloud_range[1]) / voxel_size[1]),
    round((point_cloud_range[3] - point_cloud_range[0]) / voxel_size[0]),
]
bev_cell = voxel_size[0] * lidar_stride
bev_grid = dict(point_cloud_range=point_cloud_range, voxel_size=voxel_size,
                out_size_factor=lidar_stride)
lss_cell = bev_cell / 2  # LSS pools at twice the resolution, then downsamples by 2

model = dict(
    type='MultiTaskBEVFusion',
    data_preprocessor=dict(
        type='MultiModalDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=False,
        pad_size_divisor=32,
        voxel=True,
        voxel_type='hard',
        voxel_layer=dict(
            max_num_points=10,
            point_cloud_range=point_cloud_range,
            voxel_size=voxel_size,
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
        out_channels=256,
        in_strides=(8, 16, 32),
        norm_cfg=dict(type='BN', requires_grad=True),
        act_cfg=dict(type='ReLU')),
    view_transform=dict(
        type='LSSViewTransform',
        in_channels=256,
        out_channels=80,
        image_size=image_size,
        feature_size=[image_size[0] // image_stride, image_size[1] // image_stride],
        dbound=[1.0, 60.0, 0.5],
        xbound=[point_cloud_range[0], point_cloud_range[3], lss_cell],
        ybound=[point_cloud_range[1], point_cloud_range[4], lss_cell],
        zbound=[-10.0, 10.0, 20.0],
        downsample=2),
    pts_voxel_encoder=dict(type='HardSimpleVFE', num_features=5),
    pts_middle_encoder=dict(
        type='SparseEncoder',
        in_channels=5,
        sparse_shape=sparse_shape,
        order=('conv', 'norm', 'act'),
        norm_cfg=dict(type='BN1d', eps=1e-3, momentum=0.01),
        encoder_channels=((16, 16, 32), (32, 32, 64), (64, 64, 128), (128, 128)),
        # mmdet3d's SparseEncoder pads (z, y, x): (0, 1, 1) keeps 1440 -> 180 in x and y
        encoder_paddings=((0, 0, 1), (0, 0, 1), (0, 0, (0, 1, 1)), (0, 0)),
        block_type='basicblock'),
    fuser=dict(type='ConvFuser', in_channels=[80, 256], out_channels=256),
    decoder=dict(
        type='BEVDecoder',
        backbone=dict(
            type='SECOND',
            in_channels=256,
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
        in_channels=512,
        num_classes=num_classes,
        point_cloud_range=point_cloud_range,
        voxel_size=voxel_size,
        out_size_factor=lidar_stride,
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
        in_channels=512,
        input_grid=bev_grid,
        map_grid=map_grid,
        loss_type='focal'),
    loss_weights=dict(det=1.0, seg=1.0))
