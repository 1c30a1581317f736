# Single-task baseline of the ablation study: the tiny model with detection only (no map head),
# same data, schedule and budget as the multi-task runs.
_base_ = ['./bevfusion_tiny_1xb2-24e_synthetic-nus.py']

model = dict(seg_head=None)
# mmengine cannot concatenate a {{_base_.data_root}} reference (it stays a placeholder name), so
# the base's data_root is written out here; --data-root rewrites both keys.
val_evaluator = [dict(type='NuScenesMetric', data_root='data/nuscenes-synthetic/',
                      ann_file='data/nuscenes-synthetic/nuscenes_infos_val.pkl',
                      metric='bbox', modality={{_base_.modality}})]
test_evaluator = val_evaluator
