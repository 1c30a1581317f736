default_scope = 'mmdet3d'
custom_imports = dict(imports=['fuller'], allow_failed_imports=False)
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # written temp-then-rename; every `interval` epochs, or every `interval` iterations with
    # by_epoch=False (resume then continues inside the epoch: fuller.engine.loops)
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, by_epoch=True, max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='Det3DVisualizationHook'),
    # the values that follow `geometry` / `channels` agree with them (fuller.utils.config_utils);
    # a default hook, so it also runs under mmdet3d's tools/train.py / tools/test.py and
    # Runner.from_cfg
    config_check=dict(type='ConfigCheckHook'))
custom_hooks = [dict(type='SparseConvAlgoHook'), dict(type='RunMetaHook')]
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # a timeout on collective ops, so a stuck rank fails instead of hanging forever
    dist_cfg=dict(backend='nccl', timeout=1800))
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='Det3DLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
