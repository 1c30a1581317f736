"""A plain mmengine ``Runner.from_cfg(Config.fromfile(...))`` trains, validates and tests a user
config that inherits the tiny FULLER config (issue 22), and stops before the first iteration,
naming the keys, when the user's child changes the geometry alone (fuller's ConfigCheckHook, a
default hook of configs/_base_/default_runtime.py)."""
import pytest
from mmengine.config import Config

from fuller.testing import REPO_ROOT
from fuller.testing.configs import write_user_config
from fuller.utils.config_utils import ConfigConsistencyError

TINY = REPO_ROOT / 'configs' / 'fuller' / 'fuller_tiny_1xb2-24e_synthetic-nus.py'
# two training samples in one batch of 2: one iteration, then one evaluation
ONE_ITERATION = """
train_dataloader['dataset']['indices'] = 2  # one batch of 2
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1))
"""


def _runner(config: str, work_dir):
    from mmengine.runner import Runner
    cfg = Config.fromfile(config)
    cfg.work_dir = str(work_dir)
    # one visualizer instance per runner (mmengine warns when a name is reused in a process)
    cfg.visualizer.name = f'visualizer_{work_dir.parent.name}'
    return Runner.from_cfg(cfg)


def test_runner_trains_validates_and_tests(synthetic_dataroot, tmp_path):
    config = write_user_config(tmp_path / 'user.py', TINY, synthetic_dataroot, ONE_ITERATION)
    runner = _runner(config, tmp_path / 'work')
    runner.train()
    assert runner.iter == 1 and runner.epoch == 1
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()
    metrics = runner.test()
    assert 0 <= metrics['NuScenes metric/pred_instances_3d_NuScenes/NDS'] <= 1
    assert 0 <= metrics['map/mIoU@0.5'] <= metrics['map/mIoU@max'] <= 1


def test_runner_refuses_a_child_that_changes_only_the_geometry(synthetic_dataroot, tmp_path):
    base = write_user_config(tmp_path / 'user.py', TINY, synthetic_dataroot, ONE_ITERATION)
    child = tmp_path / 'finer.py'
    child.write_text(f"_base_ = ['{base}']\ngeometry = dict(voxel_size=[0.2, 0.2, 0.4])\n")
    runner = _runner(str(child), tmp_path / 'work')  # the model itself is consistent
    with pytest.raises(ConfigConsistencyError) as err:
        runner.train()
    text = str(err.value)
    assert text.startswith(f'{child}: ')
    assert ('model.pts_middle_encoder.sparse_shape = [21, 360, 360], but '
            'geometry.sparse_shape gives [21, 540, 540]') in text  # 108 m / 0.2 m
    assert runner.iter == 0 and not list((tmp_path / 'work').glob('*.pth'))
    with pytest.raises(ConfigConsistencyError, match='sparse_shape'):
        runner.test()
