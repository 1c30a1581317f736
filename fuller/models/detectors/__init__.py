from .multitask_bevfusion import TASKS, MultiTaskBEVFusion

__all__ = ['MultiTaskBEVFusion', 'TASKS']
