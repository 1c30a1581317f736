# The same tiny model and schedule with the plain summed loss: the baseline FULLER is compared to.
_base_ = ['../fuller/fuller_tiny_1xb2-24e_synthetic-nus.py']

model = dict(grad_calibrator=None)
custom_hooks = [dict(type='SparseConvAlgoHook'), dict(type='RunMetaHook')]
