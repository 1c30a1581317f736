"""``'${...}'`` config references (fuller.utils.config_utils) and the geometry they read
(fuller.structures.BEVGeometry), on hand-written config files and hand-computed numbers."""
import pytest

from fuller.structures import BEVGeometry, BEVGrid
from fuller.utils.config_utils import load_config


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_child_override_reaches_every_reference(tmp_path):
    _write(tmp_path / 'base.py', "size = dict(w=3)\nlayer = dict(width='${size.w}', "
           "name='net${size.w}.pth', pair=['${size.w}', 1])\n")
    child = _write(tmp_path / 'child.py', "_base_ = ['./base.py']\nsize = dict(w=7)\n")
    cfg = load_config(child)
    assert cfg.layer.width == 7            # a whole-string reference keeps the type
    assert cfg.layer.name == 'net7.pth'    # inside a longer string it is formatted in
    assert cfg.layer.pair == [7, 1]
    # --cfg-options are merged before resolving
    assert load_config(child, {'size.w': 9}).layer.width == 9


def test_missing_key_and_cycle_are_named(tmp_path):
    missing = _write(tmp_path / 'missing.py', "a = dict(b='${nope.x}')\n")
    with pytest.raises(KeyError, match=r'\$\{nope.x\} at a.b'):
        load_config(missing)
    cycle = _write(tmp_path / 'cycle.py', "a = '${b}'\nb = '${a}'\n")
    with pytest.raises(ValueError, match='cycle'):
        load_config(cycle)


def test_geometry_derived_values_by_hand():
    # BEVFusion's published numbers: 0.075 m voxels over [-54, 54] m, z [-5, 3] at 0.2 m
    geo = BEVGeometry(point_cloud_range=[-54, -54, -5, 54, 54, 3], voxel_size=[0.075, 0.075, 0.2],
                      lidar_stride=8, image_size=[256, 704], image_stride=8, lss_upsample=2)
    d = geo.as_dict()
    assert d['sparse_shape'] == [41, 1440, 1440]     # 8 / 0.2 = 40 z cells, +1 (mmdet3d)
    assert d['grid_size'] == [1440, 1440, 40]        # CenterHead's (X, Y, Z)
    assert geo.bev_grid.shape == (180, 180)           # 1440 / 8
    assert d['feature_size'] == [32, 88]              # 256 / 8, 704 / 8
    assert d['xbound'] == pytest.approx([-54, 54, 0.3])   # 0.6 m cells pooled at half size
    assert d['map_cell_size'] == [0.5, 0.5]           # the published map grid by default
    assert BEVGrid(d['map_x_range'], d['map_y_range'], 0.5).shape == (200, 200)


@pytest.mark.parametrize('bad, field', [
    (dict(lidar_stride=7), 'lidar_stride'),           # 1440 voxels are not a multiple of 7
    (dict(image_stride=5), 'image_stride'),           # 256 is not a multiple of 5
    (dict(voxel_size=[0.075, 0.075, 0.3]), 'z range'),   # 8 m / 0.3 m
    (dict(point_cloud_range=[-54, -54, -5, 54, 54]), 'point_cloud_range'),
])
def test_geometry_refuses_numbers_that_make_no_grid(bad, field):
    args = dict(point_cloud_range=[-54, -54, -5, 54, 54, 3], voxel_size=[0.075, 0.075, 0.2],
                lidar_stride=8, image_size=[256, 704], image_stride=8)
    args.update(bad)
    with pytest.raises(ValueError, match=field):
        BEVGeometry(**args)
