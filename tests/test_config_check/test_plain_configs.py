"""fuller's configs are plain mmengine configs (issue 22): ``Config.fromfile`` + ``MODELS.build``
work on every shipped config, and fuller.utils.config_utils.check_config_consistency refuses a
config whose values disagree with its declared geometry / channels, naming each key and the file.

Expected values are worked out by hand from the declared numbers (tiny model: range [-54, 54] m x
[-5, 3] m, voxels 0.3 x 0.3 x 0.4 m, LiDAR stride 4, images 64 x 192 at stride 8).
"""
from pathlib import Path

import pytest
from mmengine.config import Config

from fuller.utils.config_utils import (ConfigConsistencyError,
                                       check_config_consistency,
                                       dependent_values, find_references,
                                       load_config)
from fuller.testing import REPO_ROOT, load_script

CONFIGS = sorted(p for p in (REPO_ROOT / 'configs').rglob('*.py')
                 if '_base_' not in p.parts)
TINY = REPO_ROOT / 'configs' / 'fuller' / 'fuller_tiny_1xb2-24e_synthetic-nus.py'
SUMMAG = REPO_ROOT / 'configs' / 'fuller' / 'fuller_tiny-summag_1xb2-24e_synthetic-nus.py'


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: f'{p.parent.name}/{p.name}')
def test_every_config_builds_with_plain_mmengine(path):
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile(str(path))  # custom_imports registers fuller
    assert cfg.custom_imports == dict(imports=['fuller'], allow_failed_imports=False)
    assert find_references(cfg) == []
    check_config_consistency(cfg)
    init_default_scope('mmdet3d')
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == 'MultiTaskBEVFusion'
    assert set(model.heads) == {t for t in ('det', 'seg') if cfg.model.get(f'{t}_head')}


def test_the_issue_snippet_builds():
    from mmdet3d.registry import MODELS

    import fuller  # noqa: F401
    cfg = Config.fromfile(str(SUMMAG))
    # (Z + 1, Y, X): 8 m / 0.4 m = 20 z cells (+1, mmdet3d's convention), 108 m / 0.3 m = 360
    assert cfg.model.pts_middle_encoder.sparse_shape == [21, 360, 360]
    model = MODELS.build(cfg.model)
    assert list(model.pts_middle_encoder.sparse_shape) == [21, 360, 360]


def test_dependent_values_by_hand():
    values = dependent_values(Config.fromfile(str(TINY)))
    assert values['model.pts_middle_encoder.sparse_shape'] == [21, 360, 360]
    assert values['model.view_transform.feature_size'] == [8, 24]        # 64 / 8, 192 / 8
    assert values['model.view_transform.xbound'] == pytest.approx([-54, 54, 1.2])  # 0.3 m x 4
    assert values['model.det_head.input_grid'] == dict(
        x_range=[-54.0, 54.0], y_range=[-54.0, 54.0], cell_size=pytest.approx([1.2, 1.2]))
    assert values['model.fuser.in_channels'] == [32, 64]                 # camera, LiDAR BEV
    assert values['model.seg_head.in_channels'] == 64
    assert values['train_dataloader.dataset.pipeline.4.final_dim'] == [64, 192]
    assert values['val_dataloader.dataset.pipeline.2.x_range'] == [-50.0, 50.0]  # map grid
    assert values['val_evaluator.0.data_root'] == 'data/nuscenes-synthetic/'


def test_a_child_that_changes_geometry_alone_is_refused(tmp_path):
    # voxels 0.2 m: 108 / 0.2 = 540 cells; BEV cells 0.2 x 4 = 0.8 m
    child = _write(tmp_path / 'finer.py', f"_base_ = ['{TINY}']\n"
                   "geometry = dict(voxel_size=[0.2, 0.2, 0.4])\n")
    with pytest.raises(ConfigConsistencyError) as err:
        load_config(child)
    text = str(err.value)
    assert text.startswith(f'{child}: ')
    for line in ('model.data_preprocessor.voxel_layer.voxel_size = [0.3, 0.3, 0.4], but '
                 'geometry.voxel_size gives [0.2, 0.2, 0.4]',
                 'model.pts_middle_encoder.sparse_shape = [21, 360, 360], but '
                 'geometry.sparse_shape gives [21, 540, 540]',
                 'model.view_transform.xbound = [-54.0, 54.0, 1.2], but geometry.xbound gives '
                 '[-54.0, 54.0, 0.8]'):
        assert line in text, line
    assert 'model.det_head.input_grid' in text and 'model.seg_head.input_grid' in text
    # nothing else disagrees: the image size, the map grid and the channels still hold
    assert 'final_dim' not in text and 'x_range = [-50.0' not in text
    assert 'in_channels' not in text
    # the same override as --cfg-options, and the same with the dependent keys rewritten
    with pytest.raises(ConfigConsistencyError, match='sparse_shape'):
        load_config(str(TINY), {'geometry.voxel_size': [0.2, 0.2, 0.4]})
    synced = load_config(child, sync=True)
    assert synced.model.pts_middle_encoder.sparse_shape == [21, 540, 540]


def test_channels_and_data_root_are_checked(tmp_path):
    with pytest.raises(ConfigConsistencyError) as err:
        load_config(str(TINY), {'channels.shared': 96})
    text = str(err.value)
    assert 'model.det_head.in_channels = 64, but channels.shared gives 96' in text
    assert 'model.seg_head.in_channels = 64, but channels.shared gives 96' in text
    with pytest.raises(ConfigConsistencyError,
                       match=r"val_evaluator\.0\.data_root = data/nuscenes-synthetic/, but "
                             r"data_root gives /elsewhere/"):
        load_config(str(TINY), {'data_root': '/elsewhere/'})


def test_a_reference_string_is_named_by_the_check_and_the_tools(tmp_path):
    child = _write(tmp_path / 'old_style.py', f"_base_ = ['{TINY}']\nmodel = dict("
                   "pts_middle_encoder=dict(sparse_shape='${geometry.sparse_shape}'))\n")
    match = (r"model\.pts_middle_encoder\.sparse_shape = '\$\{geometry\.sparse_shape\}': "
             r"fuller configs hold values")
    with pytest.raises(ConfigConsistencyError, match=match):
        load_config(child)
    train_tool = load_script(REPO_ROOT / 'tools' / 'train.py', 'train_tool_refs')
    with pytest.raises(ConfigConsistencyError, match=match):
        train_tool.build_config(train_tool.parse_args([child, '--work-dir', str(tmp_path)]))


def test_sync_config_tool_prints_and_writes_the_dependent_keys(tmp_path, capsys):
    tool = load_script(REPO_ROOT / 'tools' / 'misc' / 'sync_config.py', 'sync_config_tool')
    assert tool.main([str(TINY)]) == 0 and capsys.readouterr().out == ''
    override = ['--cfg-options', 'geometry.image_size=[96,256]']
    assert tool.main([str(TINY)] + override) == 1
    printed = capsys.readouterr().out.splitlines()
    # 96 / 8 = 12, 256 / 8 = 32; the image size itself in the view transform and both pipelines
    assert printed == [
        'model.view_transform.image_size=[96,256]',
        'model.view_transform.feature_size=[12,32]',
        'train_dataloader.dataset.pipeline.4.final_dim=[96,256]',
        'val_dataloader.dataset.pipeline.3.final_dim=[96,256]',
        'test_dataloader.dataset.pipeline.3.final_dim=[96,256]']
    out = tmp_path / 'wide_images.py'
    assert tool.main([str(TINY), '--out', str(out)] + override) == 0
    cfg = load_config(str(out))  # passes the check
    assert cfg.model.view_transform.feature_size == [12, 32]
