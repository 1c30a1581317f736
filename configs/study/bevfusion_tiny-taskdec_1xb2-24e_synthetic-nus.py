# Per-task decoders (docs/study-v3): the tiny plain-sum model where detection and map segmentation each
# decode the fused BEV map with a BEV decoder of their own (same architecture as the shared one, own
# weights); the tasks share the image and LiDAR branches and the fuser.
_base_ = ['../bevfusion/bevfusion_tiny_1xb2-24e_synthetic-nus.py']

model = dict(task_decoders=['det', 'seg'])
