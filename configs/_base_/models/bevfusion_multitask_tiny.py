# A CPU-sized variant of bevfusion_multitask.py for CI and the demo (trains in minutes on 2 cores):
# 0.3 m LiDAR voxels -> 360 x 360 sparse grid -> 90 x 90 BEV (1.2 m cells), 64 x 192 images,
# ResNet-18, narrow decoder and heads. The grid numbers are written once here and derived below.
_base_ = ['./bevfusion_multitask.py']

point_cloud_range = [-54.0, -54.0, -5.0, 54.0, 54.0, 3.0]
voxel_size = [0.3, 0.3, 0.4]
lidar_stride = 4
image_size = [64, 192]
image_stride = 8
map_grid = dict(x_range=(-50.0, 50.0), y_range=(-50.0, 50.0), cell_size=0.5)

sparse_shape = [
    round((point_cloud_range[5] - point_cloud_range[2]) / voxel_size[2]) + 1,
    round((point_cloud_range[4] - point_cloud_range[1]) / voxel_size[1]),
    round((point_cloud_range[3] - point_cloud_range[0]) / voxel_size[0]),
]
bev_cell = voxel_size[0] * lidar_stride
bev_grid = dict(point_cloud_range=point_cloud_range, voxel_size=voxel_size,
                out_size_factor=lidar_stride)
cam_bev_channels = 32
lidar_bev_channels = 64  # SparseEncoder: 32 channels x 2 z cells
shared_channels = 64

model = dict(
    data_preprocessor=dict(
        voxel_layer=dict(
            max_num_points=8,
            point_cloud_range=point_cloud_range,
            voxel_size=voxel_size,
            max_voxels=[30000, 30000])),
    img_backbone=dict(
        depth=18,
        out_indices=(1, 2, 3),
        init_cfg=None),
    img_neck=dict(in_channels=[128, 256, 512], out_channels=32),
    view_transform=dict(
        in_channels=32,
        out_channels=cam_bev_channels,
        image_size=image_size,
        feature_size=[image_size[0] // image_stride, image_size[1] // image_stride],
        dbound=[1.0, 55.0, 2.0],
        xbound=[point_cloud_range[0], point_cloud_range[3], bev_cell],
        ybound=[point_cloud_range[1], point_cloud_range[4], bev_cell],
        zbound=[-10.0, 10.0, 20.0],
        downsample=1),
    pts_middle_encoder=dict(
        sparse_shape=sparse_shape,
        base_channels=16,
        output_channels=32,
        encoder_channels=((16, ), (16, 32), (32, 32)),
        encoder_paddings=((0, ), (1, 1), (1, 1)),
    ),
    fuser=dict(in_channels=[cam_bev_channels, lidar_bev_channels],
               out_channels=shared_channels),
    decoder=dict(
        backbone=dict(in_channels=shared_channels, out_channels=[32, 64],
                      layer_nums=[1, 1], layer_strides=[1, 2]),
        neck=dict(in_channels=[32, 64], out_channels=[32, 32],
                  upsample_strides=[1, 2])),
    det_head=dict(
        in_channels=shared_channels,
        point_cloud_range=point_cloud_range,
        voxel_size=voxel_size,
        out_size_factor=lidar_stride,
        num_proposals=60,
        hidden_channels=32,
        num_heads=4,
        ffn_channels=64,
        head_conv=32),
    seg_head=dict(
        in_channels=shared_channels,
        input_grid=bev_grid,
        map_grid=map_grid,
        channels=32))
