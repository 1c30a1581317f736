# Ablation: PCGrad instead of IMTL-G at the shared map (modality level as in FULLER).
_base_ = ['./fuller_tiny_1xb2-24e_synthetic-nus.py']

model = dict(grad_calibrator=dict(task_method='pcgrad'))
