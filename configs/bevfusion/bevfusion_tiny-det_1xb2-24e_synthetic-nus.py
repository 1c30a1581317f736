# Single-task baseline of the ablation study: the tiny model with detection only (no map head),
# same data, schedule and budget as the multi-task runs.
_base_ = ['./bevfusion_tiny_1xb2-24e_synthetic-nus.py']

model = dict(seg_head=None)
val_evaluator = [dict(type='NuScenesMetric', data_root={{_base_.data_root}},
                      ann_file={{_base_.data_root}} + 'nuscenes_infos_val.pkl',
                      metric='bbox', modality={{_base_.modality}})]
test_evaluator = val_evaluator
