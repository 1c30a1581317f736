"""tools/create_data.py: the CLI end to end on generated data, and bad
inputs that must fail with an error naming the file, writing nothing."""
import os
import os.path as osp
import pickle
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from fuller.data_prep.splits import get_split_scenes
from fuller.testing import load_script

TOOL = Path(__file__).resolve().parents[2] / 'tools' / 'create_data.py'


def load_tool():
    return load_script(TOOL, 'create_data_tool')


def generate(root, version, num_scenes, keyframes):
    from fuller.data_prep.synthetic import generate_synthetic_nuscenes
    return generate_synthetic_nuscenes(
        root, num_scenes=num_scenes, keyframes_per_scene=keyframes,
        sweeps_per_keyframe=2, image_size=(64, 36), seed=3, version=version,
        lidar_azimuths=90)


@pytest.fixture(scope='module')
def mini_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('create_data') / 'nuscenes')
    summary = generate(root, 'v1.0-mini', num_scenes=2, keyframes=2)
    return root, summary


def run_cli(tool, root, out, version='v1.0-mini', *extra):
    return tool.main(['nuscenes', '--root-path', root, '--out-dir', out,
                      '--version', version, '--workers', '0', *extra])


def copy_root(root, tmp_path):
    dst = str(tmp_path / 'copy')
    shutil.copytree(root, dst)
    return dst


def test_importing_the_tool_parses_no_argv(monkeypatch):
    monkeypatch.setattr(sys, 'argv', ['create_data.py', '--bogus'])
    tool = load_tool()
    assert callable(tool.main)


def test_cli_writes_infos_and_masks(mini_root, tmp_path, capsys):
    root, summary = mini_root
    out = str(tmp_path / 'out')
    assert run_cli(load_tool(), root, out) == 0
    assert sorted(os.listdir(out)) == [
        'map_masks', 'nuscenes_infos_train.pkl', 'nuscenes_infos_val.pkl']
    scene_names = {s['token']: s['name'] for s in summary['scenes']}
    tokens = []
    for split, devkit_split in (('train', 'mini_train'),
                                ('val', 'mini_val')):
        with open(osp.join(out, f'nuscenes_infos_{split}.pkl'), 'rb') as f:
            data_list = pickle.load(f)['data_list']
        assert data_list
        names = {scene_names[e['scene_token']] for e in data_list}
        assert names <= set(get_split_scenes('v1.0-mini', devkit_split))
        tokens += [e['token'] for e in data_list]
    assert sorted(os.listdir(osp.join(out, 'map_masks'))) == sorted(
        f'{t}.npz' for t in tokens)
    assert 'train: ' in capsys.readouterr().out


def test_test_split_has_no_ground_truth(tmp_path):
    root = str(tmp_path / 'nuscenes-test')
    generate(root, 'v1.0-test', num_scenes=1, keyframes=2)
    out = str(tmp_path / 'out')
    assert run_cli(load_tool(), root, out, 'v1.0-test', '--extra-tag',
                   'nus') == 0
    assert sorted(os.listdir(out)) == ['map_masks', 'nus_infos_test.pkl']
    with open(osp.join(out, 'nus_infos_test.pkl'), 'rb') as f:
        pkl = pickle.load(f)
    assert pkl['metainfo']['version'] == 'v1.0-test'
    assert len(pkl['data_list']) == 2
    assert all(e['instances'] == [] for e in pkl['data_list'])


def test_unknown_version_is_a_clear_error(mini_root, tmp_path, capsys):
    out = str(tmp_path / 'out')
    assert run_cli(load_tool(), mini_root[0], out, 'v2.0-full') == 2
    err = capsys.readouterr().err
    assert 'v2.0-full' in err and 'v1.0-trainval' in err
    assert not osp.exists(out)


def test_missing_table_names_the_file(mini_root, tmp_path, capsys):
    root = copy_root(mini_root[0], tmp_path)
    table = osp.join(root, 'v1.0-mini', 'sample_data.json')
    os.remove(table)
    out = str(tmp_path / 'out')
    assert run_cli(load_tool(), root, out) == 1
    assert table in capsys.readouterr().err
    assert not osp.exists(out)
    from fuller.data_prep.nuscenes_infos import create_nuscenes_data
    with pytest.raises(FileNotFoundError, match=re.escape(table)):
        create_nuscenes_data(root, out, 'v1.0-mini', progress=False)


def test_missing_map_expansion_fails_before_any_output(mini_root, tmp_path,
                                                       capsys):
    root = copy_root(mini_root[0], tmp_path)
    location = mini_root[1]['scenes'][0]['location']
    path = osp.join(root, 'maps', 'expansion', f'{location}.json')
    os.remove(path)
    out = str(tmp_path / 'out')
    assert run_cli(load_tool(), root, out) == 1
    err = capsys.readouterr().err
    assert path in err and 'nuScenes-map-expansion-v1.3' in err
    assert osp.join(root, 'maps', 'expansion') in err
    assert not osp.exists(out)
    # infos alone do not need the map
    assert run_cli(load_tool(), root, out, 'v1.0-mini',
                   '--skip-map-masks') == 0
    assert sorted(os.listdir(out)) == ['nuscenes_infos_train.pkl',
                                       'nuscenes_infos_val.pkl']


def test_corrupt_lidar_file_names_it_and_writes_nothing(mini_root, tmp_path,
                                                        capsys):
    root = copy_root(mini_root[0], tmp_path)
    lidar_dir = osp.join(root, 'samples', 'LIDAR_TOP')
    victim = osp.join(lidar_dir, sorted(os.listdir(lidar_dir))[1])
    data = np.fromfile(victim, dtype=np.uint8)
    data[:-7].tofile(victim)  # not a multiple of 5 float32 (20 bytes)
    out = str(tmp_path / 'out')
    assert run_cli(load_tool(), root, out) == 1
    err = capsys.readouterr().err
    assert victim in err and 'multiple of 20' in err
    assert not osp.exists(out)
