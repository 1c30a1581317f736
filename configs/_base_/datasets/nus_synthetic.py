# The generated nuScenes-format dataset (tools/create_synthetic_nuscenes.py), CPU-sized:
# v1.0-mini layout (mini_train / mini_val scenes), 704 x 396 camera JPEGs, network input 64 x 192
# (the tiny model's geometry.image_size). The pipelines are nus_multitask.py's with this dataset's
# settings: 3 sweeps and smaller image scales. Prepare with: make demo (or
# tools/create_synthetic_nuscenes.py + tools/create_data.py).
_base_ = ['./nus_multitask.py']

data_root = 'data/nuscenes-synthetic/'
metainfo = dict(_base_.metainfo, version='v1.0-mini')
train_pipeline = [
    dict(step, sweeps_num=3) if step['type'] == 'LoadNuScenesPoints' else
    dict(step, final_dim=[64, 192], resize_lim=(0.27, 0.31)) if step['type'] == 'ImageAug3D' else
    step for step in _base_.train_pipeline]
test_pipeline = [
    dict(step, sweeps_num=3) if step['type'] == 'LoadNuScenesPoints' else
    dict(step, final_dim=[64, 192], resize_lim=(0.29, 0.29)) if step['type'] == 'ImageAug3D' else
    step for step in _base_.test_pipeline]

train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    # no class-balanced resampling: the dataset itself instead of the CBGSDataset wrapper
    dataset=dict(_base_.train_dataloader.dataset.dataset, _delete_=True, data_root=data_root,
                 metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = [
    dict(_base_.val_evaluator[0], data_root=data_root,
         ann_file=data_root + 'nuscenes_infos_val.pkl'),
    _base_.val_evaluator[1],
]
test_evaluator = val_evaluator
