# Ablation: FULLER's intra-gradient (modality magnitude) calibration only; the trunk gets the plain
# sum of the task gradients.
_base_ = ['./fuller_tiny_1xb2-24e_synthetic-nus.py']

model = dict(grad_calibrator=dict(enable_task=False))
