"""FULLER multi-level gradient calibration (inter-task and intra-modality).

``GradientCalibrator`` is what a model owns (``model.grad_calibrator``);
``GradientCalibrationHook`` (registered in mmdet3d's HOOKS) drives it from a
config; ``task_weights`` holds the pure math; ``step_scaling`` the step form
of the modality level and the measured branch steps; ``famo`` a loss-rate
task weighting (FAMO) for comparison.
"""
from .calibration_hook import GradientCalibrationHook
from .calibrator import GradientCalibrator
from .famo import FAMOHook, FAMOWeighting
from .grad_functions import ModalityGradCalibration, TaskGradCalibration
from .step_scaling import (MODALITY_MODES, BranchStepScaler,
                           apply_step_scale_, group_parameters)
from .task_weights import (MODALITY_TARGETS, TASK_MAGNITUDES, TASK_METHODS,
                           TaskWeights, compute_task_weights, cosine_matrix,
                           gram_matrix, match_sum_magnitude, modality_scales,
                           task_shares)

__all__ = [
    'GradientCalibrator', 'GradientCalibrationHook', 'TaskGradCalibration',
    'ModalityGradCalibration', 'FAMOWeighting', 'FAMOHook', 'TaskWeights', 'compute_task_weights',
    'cosine_matrix', 'gram_matrix', 'modality_scales', 'match_sum_magnitude',
    'TASK_METHODS', 'TASK_MAGNITUDES', 'MODALITY_TARGETS', 'MODALITY_MODES',
    'BranchStepScaler', 'apply_step_scale_', 'group_parameters', 'task_shares'
]
