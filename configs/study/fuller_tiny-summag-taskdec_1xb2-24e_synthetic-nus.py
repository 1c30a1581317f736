# FULLER with the sum's length and per-task decoders: the task calibration acts on the fused BEV map,
# the last layer the tasks still share.
_base_ = ['../fuller/fuller_tiny-summag_1xb2-24e_synthetic-nus.py']

model = dict(task_decoders=['det', 'seg'])
