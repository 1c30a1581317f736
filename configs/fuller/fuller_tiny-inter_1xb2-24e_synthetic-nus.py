# Ablation: FULLER's inter-gradient (task) calibration only; modality gradients left as they are.
_base_ = ['./fuller_tiny_1xb2-24e_synthetic-nus.py']

model = dict(grad_calibrator=dict(enable_modality=False))
