# Capacity axis of the multi-task study (docs/study-v3): the tiny plain-sum model with its shared trunk
# (fuser output, BEV decoder and the map both heads read) 256 channels wide instead of 64; images,
# LiDAR branch, heads, data and schedule unchanged. The fuser, decoder and heads restate the widths
# declared in `channels` (checked against them by fuller.utils.config_utils.check_config_consistency).
_base_ = ['../bevfusion/bevfusion_tiny_1xb2-24e_synthetic-nus.py']

channels = dict(shared_in=256, shared=256)
model = dict(
    fuser=dict(out_channels=256),  # channels.shared_in
    decoder=dict(
        backbone=dict(in_channels=256, out_channels=[128, 256]),  # in: channels.shared_in
        # SECONDFPN output: 2 x 128 = channels.shared
        neck=dict(in_channels=[128, 256], out_channels=[128, 128])),
    det_head=dict(in_channels=256),  # channels.shared
    seg_head=dict(in_channels=256))
