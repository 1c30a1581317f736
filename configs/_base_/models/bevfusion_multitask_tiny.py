# A CPU-sized variant of bevfusion_multitask.py for CI and the demo (trains in minutes on 2 cores):
# 0.3 m LiDAR voxels -> 360 x 360 sparse grid -> 90 x 90 BEV (1.2 m cells), 64 x 192 images,
# ResNet-18, narrow decoder and heads. Only what differs from the full model is stated: the
# geometry and channel counts below reach every module through their '${...}' references.
_base_ = ['./bevfusion_multitask.py']

geometry = dict(voxel_size=[0.3, 0.3, 0.4], lidar_stride=4, image_size=[64, 192], lss_upsample=1)
channels = dict(image_features=32, camera_bev=32,
                lidar_bev=64,  # SparseEncoder: 32 channels x 2 z cells
                shared_in=64, shared=64)

model = dict(
    data_preprocessor=dict(voxel_layer=dict(max_num_points=8, max_voxels=[30000, 30000])),
    img_backbone=dict(depth=18, out_indices=(1, 2, 3), init_cfg=None),
    img_neck=dict(in_channels=[128, 256, 512]),
    view_transform=dict(dbound=[1.0, 55.0, 2.0]),
    pts_middle_encoder=dict(
        base_channels=16,
        output_channels=32,
        encoder_channels=((16, ), (16, 32), (32, 32)),
        encoder_paddings=((0, ), (1, 1), (1, 1)),
    ),
    decoder=dict(
        backbone=dict(out_channels=[32, 64], layer_nums=[1, 1], layer_strides=[1, 2]),
        neck=dict(in_channels=[32, 64], out_channels=[32, 32], upsample_strides=[1, 2])),
    det_head=dict(num_proposals=60, hidden_channels=32, num_heads=4, ffn_channels=64,
                  head_conv=32),
    seg_head=dict(channels=32))
