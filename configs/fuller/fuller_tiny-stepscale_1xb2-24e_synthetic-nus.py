# Ablation: FULLER with the intra-gradient (modality) calibration in step form: the camera and
# LiDAR gradients are left as they are and each branch's AdamW step is multiplied by the factor
# the gradient form would apply to its gradient (fuller/calibration/step_scaling.py).
# GradientCalibrationHook (from the base config) attaches the step scaler to the optimiser; the
# task level is FULLER's IMTL-G.
_base_ = ['./fuller_tiny_1xb2-24e_synthetic-nus.py']

model = dict(grad_calibrator=dict(modality_mode='step'))
