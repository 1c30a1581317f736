"""The tiny models learn: a short run on the generated data beats the
untrained model on the same data (map segmentation: the FULLER config;
detection: the detection-only config, below).

One scene of the generated dataroot (the mini_val scene, 4 keyframes: the
scene the devkit's v1.0-mini evaluation reads) is used for training and for
evaluation, so this is a fitting check, not a generalisation measure. The
untrained model (the same config and seed, evaluated before training) and
the model after 10 epochs (20 iterations of 2 samples) are evaluated by
mmengine's Runner with the config's own metrics.

Measured (one thread, seeds 0, 1, 2 of ``randomness.seed``, the test runs
seed 0), map mIoU@max (the best of the metric's thresholds):

    untrained                 0.0939  0.0939  0.0939  (spread < 2e-5)
    after 10 epochs           0.1306  0.1567  0.1112
    after 20 epochs (seed 2)                  0.1180

MIOU_MAX_THRESHOLD = 0.10 lies 0.006 above every untrained value (300
times their spread) and 0.011 below the lowest trained one.

What does not learn in this budget, and so is not checked by that test:
detection mAP (untrained 0.0, 0.0, 0.0007; after 10 epochs 0.0, 0.0002,
0.0025 for seeds 0, 1, 2; the plain sum at 2.5 x the learning rate reached
0.008 after 40 epochs), and mIoU at the fixed 0.5 threshold (seed 0: 0.091
untrained, 0.100 after 10 epochs, 0.058 after 40; seeds 1 and 2 fell after
10).

Detection is checked by a second run, built to fit: the detection-only tiny
config (configs/bevfusion/bevfusion_tiny-det_1xb2-24e_synthetic-nus.py)
trains on the same 4 samples as it is evaluated on, through the training
pipeline without its random augmentation (image crop, flip and rotation,
global rotation / scaling / translation, BEV flips, point shuffling), so the
training inputs are the evaluation inputs; AdamW at a constant lr of 5e-3
(the config's 2e-3 with warm-up and cosine decay was not tried in this
setting; 1e-2 failed, below) for DET_EPOCHS = 50 epochs (100 iterations of 2
samples).
The metric is the config's, the nuScenes devkit's mAP. Measured (one thread;
seeds 0, 1, 2; the test runs seed 0), mAP on the 4 samples:

    untrained                          0.0     0.0     0.0007
    after 50 epochs, as in the test    0.469   0.374   0.452
    runs evaluated every 5 epochs:
      after 30 epochs                  0.115   0.014   0.213
      after 40 epochs                  0.099   0.284   0.157
      after 50 epochs                  0.288   0.570   0.670

(Evaluating along the way changes the run, reproducibly: seed 0 evaluated
every 5 epochs ends at 0.288 whether run alone or beside another run, and at
0.469 without the evaluations; the cause was not looked for.)
DET_MAP_THRESHOLD = 0.1 lies 0.099 above every untrained value (140 times
their spread) and 0.19 below the lowest of the six trained runs at 50 epochs
(they spread over 0.38). At 1e-2 (seed 0) the run stopped at its first
evaluation, at epoch 5: the devkit rejected its results ("Error: Invalid box
type: None"). The run takes about 60 s on one loaded core.
"""
from fuller.testing import REPO_ROOT, one_thread

CONFIG = REPO_ROOT / 'configs' / 'fuller' / 'fuller_tiny_1xb2-24e_synthetic-nus.py'
DET_CONFIG = REPO_ROOT / 'configs' / 'bevfusion' / 'bevfusion_tiny-det_1xb2-24e_synthetic-nus.py'
EPOCHS = 10
MIOU_MAX_THRESHOLD = 0.10
MIOU_KEY = 'map/mIoU@max'
DET_EPOCHS = 50
DET_LR = 5e-3
DET_MAP_THRESHOLD = 0.1
MAP_KEY = 'NuScenes metric/pred_instances_3d_NuScenes/mAP'
RANDOM_STEPS = ('BEVGlobalRotScaleTrans', 'BEVRandomFlip3D', 'PointShuffle')


def _train_on_the_test_split(config, dataroot, work_dir, epochs: int):
    """``config`` at seed 0 training ``epochs`` epochs on the test split
    of the dataset at ``dataroot``, with no validation or checkpoint on
    the way."""
    from fuller.utils.config_utils import load_config, set_data_root
    cfg = load_config(str(config))
    set_data_root(cfg, str(dataroot))
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=0)
    cfg.train_dataloader.dataset.ann_file = cfg.test_dataloader.dataset.ann_file
    cfg.train_cfg.max_epochs = epochs
    cfg.train_cfg.val_interval = epochs + 1
    cfg.default_hooks.checkpoint.interval = epochs + 1
    return cfg


def _test_before_and_after_training(cfg):
    """The test metrics of the model built from ``cfg``, untrained and
    after its training."""
    from mmengine.runner import Runner
    runner = Runner.from_cfg(cfg)
    untrained = runner.test()
    runner.train()
    return untrained, runner.test()


def test_short_run_beats_the_untrained_model(synthetic_dataroot, tmp_path):
    with one_thread():
        cfg = _train_on_the_test_split(CONFIG, synthetic_dataroot, tmp_path, EPOCHS)
        for hook in cfg.custom_hooks:
            if hook.type == 'GradientCalibrationHook':
                hook.warmup_iters = 0
        untrained, trained = _test_before_and_after_training(cfg)
    assert untrained[MIOU_KEY] < MIOU_MAX_THRESHOLD < trained[MIOU_KEY], (
        untrained, trained)


def test_detection_fits_four_samples(synthetic_dataroot, tmp_path):
    with one_thread():
        cfg = _train_on_the_test_split(DET_CONFIG, synthetic_dataroot, tmp_path,
                                       DET_EPOCHS)
        train = cfg.train_dataloader.dataset
        test_aug = [step for step in cfg.test_dataloader.dataset.pipeline
                    if step['type'] == 'ImageAug3D']
        train.pipeline = [
            test_aug[0] if step['type'] == 'ImageAug3D' else step
            for step in train.pipeline if step['type'] not in RANDOM_STEPS]
        cfg.optim_wrapper.optimizer.lr = DET_LR
        cfg.param_scheduler = []
        # mmengine keeps one visualizer a name per process, and warns on a second
        cfg.visualizer.name = 'detection_learning_check'
        untrained, trained = _test_before_and_after_training(cfg)
    assert untrained[MAP_KEY] < DET_MAP_THRESHOLD < trained[MAP_KEY], (
        untrained[MAP_KEY], trained[MAP_KEY])
