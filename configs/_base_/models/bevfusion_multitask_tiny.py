# A CPU-sized variant of bevfusion_multitask.py for CI and the demo (trains in minutes on 2 cores):
# 0.3 m LiDAR voxels -> 360 x 360 sparse grid -> 90 x 90 BEV (1.2 m cells), 64 x 192 images,
# ResNet-18, narrow decoder and heads. Only what differs from the full model is stated. The values
# that follow from `geometry` and `channels` are restated below where they change (checked against
# them before every run by fuller.utils.config_utils.check_config_consistency; after editing the
# declarations, `python tools/misc/sync_config.py` prints the keys that follow them).
_base_ = ['./bevfusion_multitask.py']

geometry = dict(voxel_size=[0.3, 0.3, 0.4], lidar_stride=4, image_size=[64, 192], lss_upsample=1)
channels = dict(image_features=32, camera_bev=32,
                lidar_bev=64,  # SparseEncoder: 32 channels x 2 z cells
                shared_in=64, shared=64)

model = dict(
    data_preprocessor=dict(voxel_layer=dict(max_num_points=8, max_voxels=[30000, 30000],
                                            voxel_size=geometry['voxel_size'])),
    img_backbone=dict(depth=18, out_indices=(1, 2, 3), init_cfg=None),
    img_neck=dict(in_channels=[128, 256, 512], out_channels=channels['image_features']),
    view_transform=dict(
        in_channels=channels['image_features'],
        out_channels=channels['camera_bev'],
        image_size=geometry['image_size'],
        feature_size=[8, 24],  # image_size / image_stride
        dbound=[1.0, 55.0, 2.0],
        xbound=[-54.0, 54.0, 1.2],  # BEV x range, BEV cell / lss_upsample
        ybound=[-54.0, 54.0, 1.2],
        downsample=geometry['lss_upsample']),
    pts_middle_encoder=dict(
        sparse_shape=[21, 360, 360],  # (Z + 1, Y, X) voxels
        base_channels=16,
        output_channels=32,
        encoder_channels=((16, ), (16, 32), (32, 32)),
        encoder_paddings=((0, ), (1, 1), (1, 1)),
    ),
    fuser=dict(in_channels=[channels['camera_bev'], channels['lidar_bev']],
               out_channels=channels['shared_in']),
    decoder=dict(
        backbone=dict(in_channels=channels['shared_in'], out_channels=[32, 64], layer_nums=[1, 1],
                      layer_strides=[1, 2]),
        neck=dict(in_channels=[32, 64], out_channels=[32, 32], upsample_strides=[1, 2])),
    # the shared BEV map: 1.2 m cells (0.3 m voxels x LiDAR stride 4), 90 x 90
    det_head=dict(in_channels=channels['shared'],
                  input_grid=dict(x_range=[-54.0, 54.0], y_range=[-54.0, 54.0],
                                  cell_size=[1.2, 1.2]),
                  num_proposals=60, hidden_channels=32, num_heads=4, ffn_channels=64, head_conv=32),
    seg_head=dict(in_channels=channels['shared'],
                  input_grid=dict(x_range=[-54.0, 54.0], y_range=[-54.0, 54.0],
                                  cell_size=[1.2, 1.2]),
                  channels=32))
