# FAMO (Liu et al., NeurIPS 2023; fuller.calibration.famo): the tiny plain-sum model with each task's loss
# weighted so that the task losses fall at the same relative rate, the loss-rate comparison of the
# multi-task study (issue 21, item 9). One more forward pass per iteration (FAMOHook).
_base_ = ['../bevfusion/bevfusion_tiny_1xb2-24e_synthetic-nus.py']

model = dict(loss_balancer=dict(type='FAMOWeighting'))
custom_hooks = _base_.custom_hooks + [dict(type='FAMOHook')]
