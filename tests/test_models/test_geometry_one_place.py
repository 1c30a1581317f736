"""The grid is declared in one place and every module follows it.

The tiny FULLER config is loaded with one override of ``geometry`` (a non-square, off-centre
point-cloud range and a non-square map grid) and the keys that follow it rewritten by
``sync_dependent_values`` (what tools/misc/sync_config.py writes); nothing else is touched.
Expected values are worked out by hand from the two overrides:

- range x [-48, 48], y [-24, 36] (96 m x 60 m), voxels 0.3 m -> 320 x 200 voxels, z 8 m / 0.4 m
  = 20 cells (+1 in mmdet3d's sparse shape); LiDAR stride 4 -> 1.2 m BEV cells, 80 x 50.
- map grid x [-40, 40], y [-20, 30] at 0.5 m -> 160 x 100 cells.

The model built from it, the data pipeline, the map-mask cache written by
``tools/create_data.py --config`` (for a user config that overrides only the map grid) and one
training forward all use those grids; the drivable-area mask is compared with the devkit's own
``NuScenesMap.get_map_mask`` on the same patch.
"""
import subprocess
import sys

import numpy as np
import pytest
import torch

from fuller.structures import BEVGrid
from fuller.utils.config_utils import load_config
from fuller.testing import REPO_ROOT

CONFIG = REPO_ROOT / 'configs' / 'fuller' / 'fuller_tiny_1xb2-24e_synthetic-nus.py'
OVERRIDES = {
    'geometry.point_cloud_range': [-48.0, -24.0, -5.0, 48.0, 36.0, 3.0],
    'geometry.map_grid': dict(x_range=[-40.0, 40.0], y_range=[-20.0, 30.0], cell_size=0.5),
}
BEV = BEVGrid((-48.0, 48.0), (-24.0, 36.0), 1.2)   # (Y, X) = (50, 80)
MAP = BEVGrid((-40.0, 40.0), (-20.0, 30.0), 0.5)   # (Y, X) = (100, 160)


@pytest.fixture(scope='module')
def cfg():
    # the override of `geometry`, with the keys that follow it rewritten from it
    # (tools/misc/sync_config.py); the consistency check then passes
    return load_config(str(CONFIG), OVERRIDES, sync=True)


@pytest.fixture(scope='module')
def model(cfg):
    from mmdet3d.registry import MODELS
    from mmengine.registry import init_default_scope

    import fuller  # noqa: F401
    init_default_scope('mmdet3d')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_every_module_follows_the_one_override(model):
    assert BEV.shape == (50, 80) and MAP.shape == (100, 160)
    layer = model.data_preprocessor.voxel_layer
    assert list(layer.point_cloud_range) == [-48.0, -24.0, -5.0, 48.0, 36.0, 3.0]
    assert list(model.pts_middle_encoder.sparse_shape) == [21, 200, 320]
    assert model.view_transform.output_grid == BEV
    assert model.heads['det'].input_grid == BEV
    assert model.heads['seg'].input_grid == BEV
    assert model.heads['seg'].map_grid == MAP


def test_pipeline_follows(cfg):
    for loader in ('train_dataloader', 'val_dataloader'):
        pipeline = {t['type']: t for t in cfg[loader].dataset.pipeline}
        assert pipeline['PointsRangeFilter']['point_cloud_range'] == \
            [-48.0, -24.0, -5.0, 48.0, 36.0, 3.0]
        masks = pipeline['LoadBEVMapMasks']
        assert (masks['x_range'], masks['y_range']) == ([-40.0, 40.0], [-20.0, 30.0])
        assert list(pipeline['ImageAug3D']['final_dim']) == [64, 192]


def test_a_mismatch_is_a_build_error_naming_both_modules(cfg):
    from mmdet3d.registry import MODELS
    bad = load_config(str(CONFIG), OVERRIDES, sync=True).model
    bad.view_transform.xbound = [-54.0, 54.0, 1.2]  # one module edited by hand
    with pytest.raises(ValueError, match='view_transform and pts_middle_encoder'):
        MODELS.build(bad)


def test_masks_and_a_training_step_follow(cfg, model, synthetic_dataroot, tmp_path):
    from mmdet3d.registry import DATASETS
    from mmengine.dataset import pseudo_collate
    from nuscenes.map_expansion.map_api import NuScenesMap

    from fuller.compat import set_spconv_algo
    from fuller.data_prep.bev_map_masks import devkit_patch, info_lidar2global
    from fuller.structures import MAP_CLASSES
    from fuller.utils.config_utils import set_data_root

    root = tmp_path / 'data'
    subprocess.run(['cp', '-r', str(synthetic_dataroot), str(root)], check=True)
    subprocess.run(['rm', '-rf', str(root / 'map_masks')], check=True)
    # a user config that changes the map grid in its one place
    child = tmp_path / 'nonsquare.py'
    child.write_text(f"_base_ = ['{CONFIG}']\ngeometry = dict(map_grid=dict("
                     "x_range=[-40.0, 40.0], y_range=[-20.0, 30.0], cell_size=0.5))\n")
    cmd = [sys.executable, str(REPO_ROOT / 'tools' / 'create_data.py'), 'nuscenes',
           '--root-path', str(root), '--out-dir', str(root), '--version', 'v1.0-mini',
           '--workers', '0', '--config', str(child)]
    subprocess.run(cmd, check=True, cwd=REPO_ROOT, capture_output=True)

    set_data_root(cfg, str(root))
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    masks = dataset[0]['data_samples'].gt_masks_bev.numpy()
    assert masks.shape == (len(MAP_CLASSES), 100, 160)
    # the devkit draws the same drivable area on that patch (the val pipeline does not augment)
    info = dataset.get_data_info(0)
    nusc_map = NuScenesMap(dataroot=str(root), map_name=info['location'])
    patch_box, patch_angle = devkit_patch(info_lidar2global(info), MAP)
    devkit = nusc_map.get_map_mask(patch_box, patch_angle, ['drivable_area'], MAP.shape)
    assert MAP_CLASSES[0] == 'drivable_area'
    np.testing.assert_array_equal(masks[0], devkit[0].astype(bool))
    assert 0 < masks[0].sum() < masks[0].size  # a real, partial road patch

    model.train()
    set_spconv_algo(model, 'cpu')
    train = DATASETS.build(cfg.train_dataloader.dataset)
    batch = model.data_preprocessor(pseudo_collate([train[0]]), True)
    assert tuple(batch['data_samples'][0].gt_masks_bev.shape[-2:]) == MAP.shape
    losses = model(**batch, mode='loss')
    assert all(torch.isfinite(v).all() for k, v in losses.items() if 'loss' in k)
    assert tuple(model.extract_feat(batch['inputs']).shape[-2:]) == BEV.shape
