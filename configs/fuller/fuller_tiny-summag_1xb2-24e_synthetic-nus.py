# Ablation: FULLER with the IMTL-G direction rescaled to the plain sum's length at the shared map.
_base_ = ['./fuller_tiny_1xb2-24e_synthetic-nus.py']

model = dict(grad_calibrator=dict(task_magnitude='sum'))
