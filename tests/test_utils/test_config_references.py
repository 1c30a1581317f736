"""The values fuller.structures.BEVGeometry derives from a declared geometry (what
fuller.utils.config_utils.check_config_consistency compares a config's modules and pipelines
with; tests/test_config_check/ checks the configs themselves), on hand-computed numbers."""
import pytest

from fuller.structures import BEVGeometry, BEVGrid


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
