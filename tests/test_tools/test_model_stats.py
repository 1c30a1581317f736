"""tools/analysis/model_stats.py on the tiny model: the stages it reports
are the detector's own submodules that ran in its forward, their times fit
inside the whole forward, and the CLI writes the same report as JSON."""
import copy
import json

import pytest
import torch

from fuller.testing import build_model_from_config
from fuller.testing import REPO_ROOT, load_script

TINY = (REPO_ROOT / 'configs' / 'fuller' /
        'fuller_tiny_1xb2-24e_synthetic-nus.py')
TINY_STAGES = {'data_preprocessor', 'img_backbone', 'img_neck',
               'view_transform', 'pts_voxel_encoder', 'pts_middle_encoder',
               'fuser', 'decoder', 'heads.det', 'heads.seg'}
LIDAR_DET_ONLY = dict(img_backbone=None, img_neck=None, view_transform=None,
                      fuser=None, seg_head=None)


@pytest.fixture(scope='module')
def tool():
    return load_script(REPO_ROOT / 'tools' / 'analysis' / 'model_stats.py', 'model_stats')


def submodules_that_ran(model, data, mode):
    """Names of the model's direct submodules and task heads (as
    ``named_modules`` spells them) called during one forward, found with
    hooks of this test on every module."""
    names = set(dict(model.named_children())) | {
        f'heads.{task}' for task in model.heads}
    ran, handles = set(), []
    for name, module in model.named_modules():
        if name in names:
            handles.append(module.register_forward_hook(
                lambda *_, name=name: ran.add(name)))
    try:
        model.train(mode == 'loss')
        with torch.set_grad_enabled(mode == 'loss'):
            if mode == 'predict':
                model.test_step(copy.deepcopy(data))
            else:
                batch = model.data_preprocessor(copy.deepcopy(data), True)
                model(**batch, mode='loss')
    finally:
        for handle in handles:
            handle.remove()
    return ran


@pytest.mark.parametrize('overrides,mode,expected', [
    (None, 'predict', TINY_STAGES),
    (None, 'loss', TINY_STAGES),
    (LIDAR_DET_ONLY, 'predict', {'data_preprocessor', 'pts_voxel_encoder',
                                 'pts_middle_encoder', 'decoder',
                                 'heads.det'}),
])
def test_stages_are_the_submodules_that_ran(tool, overrides, mode,
                                            expected):
    model = build_model_from_config(TINY, model_overrides=overrides)
    data = tool.make_data(model, batch_size=1, num_points=3000)
    report = tool.profile(model, data, repeat=2, mode=mode)
    stages = report['stages']
    assert set(stages) == submodules_that_ran(model, data, mode) == expected
    for name, row in stages.items():
        module = model.get_submodule(name)
        assert row['module'] == type(module).__name__
        assert row['params'] == sum(p.numel() for p in module.parameters())
        assert 0 < row['time_s'] and row['time_min_s'] <= row['time_s']
        assert not module._forward_hooks and not module._forward_pre_hooks
    total = report['total']
    assert sum(r['time_s'] for r in stages.values()) <= total['time_s']
    assert report['outside']['time_s'] >= 0
    assert sum(r['share'] for r in stages.values()) + report['outside'][
        'share'] == pytest.approx(1.0)
    assert total['params'] == sum(p.numel() for p in model.parameters())
    assert sum(r['params'] for r in stages.values()) + sum(
        report['idle_params'].values()) == total['params']
    # shapes as the tiny config's numbers say: 108 m / 1.2 m = 90 cells,
    # map grid 100 m / 0.5 m = 200 cells
    assert stages['decoder']['output_shape'] == '1x64x90x90'
    if 'heads.seg' in stages:
        assert stages['heads.seg']['output_shape'] == '1x6x200x200'
        assert stages['view_transform']['output_shape'] == '1x32x90x90'


def test_cli_prints_markdown_and_writes_json(tool, tmp_path, capsys):
    out = tmp_path / 'stats.json'
    report = tool.main([str(TINY), '--repeat', '1', '--points', '3000',
                        '--threads', '1', '--json', str(out)])
    text = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert list(saved['stages']) == list(report['stages'])
    assert set(saved['stages']) == TINY_STAGES
    assert saved['meta']['points'] == 3000
    assert 0 < saved['meta']['voxels'] <= 3000
    for name in TINY_STAGES:
        assert f'| {name} |' in text
    assert '**whole forward**' in text


def test_cli_rejects_bad_arguments(tool, tmp_path):
    with pytest.raises(SystemExit):
        tool.parse_args([str(tmp_path / 'missing.py')])
    with pytest.raises(SystemExit):
        tool.parse_args([str(TINY), '--repeat', '0'])
