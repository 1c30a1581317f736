# The camera + LiDAR multi-task baseline with BEVFusion's Swin-T image backbone (mmdet's
# SwinTransformer, the reference configs' settings) instead of ResNet-50. Its weights come from a
# checkpoint you supply: set `swin_checkpoint` below, or pass
#   --cfg-options model.img_backbone.init_cfg.checkpoint=PATH
# (BEVFusion uses a Swin-T pretrained on nuImages; the ImageNet release
# swin_tiny_patch4_window7_224.pth from github.com/SwinTransformer/storage also works).
# InitCheckpointCheckHook stops the run before training when the file is missing.
_base_ = ['./bevfusion_lidar-cam_voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det-seg.py']

swin_checkpoint = 'checkpoints/swint-nuimages-pretrained.pth'
# True for the official Swin release (keys 'layers.*', converted by mmdet); False for a checkpoint
# saved by mmdet/mmdet3d (keys 'backbone.stages.*'), which must not be converted.
swin_convert_weights = True
swin_channels = [192, 384, 768]  # Swin-T stages 2-4 (out_indices 1, 2, 3): strides 8, 16, 32

model = dict(
    img_backbone=dict(
        _delete_=True,
        type='mmdet.SwinTransformer',
        embed_dims=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        mlp_ratio=4,
        qkv_bias=True,
        qk_scale=None,
        drop_rate=0.0,
        attn_drop_rate=0.0,
        drop_path_rate=0.2,
        patch_norm=True,
        out_indices=[1, 2, 3],
        with_cp=False,
        convert_weights=swin_convert_weights,
        init_cfg=dict(type='Pretrained', checkpoint=swin_checkpoint)),
    img_neck=dict(in_channels=swin_channels))

init_checkpoint_hint = ('Set swin_checkpoint in configs/bevfusion/bevfusion_lidar-cam-swint_'
                        'voxel0075_second_secfpn_8xb4-cyclic-20e_nus-det-seg.py or pass '
                        '--cfg-options model.img_backbone.init_cfg.checkpoint=PATH')
custom_hooks = [dict(type='InitCheckpointCheckHook', hint=init_checkpoint_hint)
                ] + _base_.custom_hooks
