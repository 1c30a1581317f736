# The generated nuScenes-format dataset (tools/create_synthetic_nuscenes.py), CPU-sized:
# v1.0-mini layout (mini_train / mini_val scenes), 704 x 396 camera JPEGs, network input from the
# model's geometry (64 x 192 for the tiny model). The pipelines are nus_multitask.py's; only the
# data settings differ. Prepare with: make demo (or tools/create_synthetic_nuscenes.py +
# tools/create_data.py).
_base_ = ['./nus_multitask.py']

data_root = 'data/nuscenes-synthetic/'
version = 'v1.0-mini'
train_resize_lim = (0.27, 0.31)
test_resize = 0.29
sweeps_num = 3

train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset='${train_dataset}')  # no class-balanced resampling
val_dataloader = dict(num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader
