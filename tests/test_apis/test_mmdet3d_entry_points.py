"""mmdet3d's own entry points on a user config inheriting the tiny FULLER config (issue 22):
mmdet3d 1.4's tools/train.py (one iteration) and tools/test.py (one evaluation) from the wheel,
with fuller importable through the config's custom_imports; ``mmdet3d.apis.init_model`` +
``fuller.apis.inference_multitask`` give exactly the predictions tools/test.py dumped for the same
samples (mmengine's DumpResults metric); fuller's tools/test.py dumps the same; a sample built
from raw file paths predicts what its info entry predicts."""
import os.path as osp
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fuller.testing import REPO_ROOT
from fuller.testing.configs import write_user_config

TINY = REPO_ROOT / 'configs' / 'fuller' / 'fuller_tiny_1xb2-24e_synthetic-nus.py'
ONE_ITERATION = """
train_dataloader['dataset']['indices'] = 2  # one batch of 2
train_cfg = dict(max_epochs=1, val_interval=10)
"""


def _mmdet3d_tool(name: str) -> Path:
    import mmdet3d
    return Path(mmdet3d.__file__).parent / '.mim' / 'tools' / name


def _run(*args, timeout=900) -> str:
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def _dumping(path: Path, base: str, dump: Path) -> str:
    path.write_text(f"_base_ = ['{base}']\ntest_evaluator = _base_.test_evaluator + "
                    f"[dict(type='DumpResults', out_file_path='{dump}')]\n")
    return str(path)


@pytest.fixture(scope='module')
def run(synthetic_dataroot, tmp_path_factory):
    """mmdet3d's train.py for one iteration, then mmdet3d's test.py with a dump."""
    tmp = tmp_path_factory.mktemp('mmdet3d_tools')
    config = write_user_config(tmp / 'user.py', TINY, synthetic_dataroot, ONE_ITERATION)
    train_out = _run(_mmdet3d_tool('train.py'), config, '--work-dir', tmp / 'work')
    ckpt = tmp / 'work' / 'epoch_1.pth'
    dump = tmp / 'mmdet3d_dump.pkl'
    test_out = _run(_mmdet3d_tool('test.py'), _dumping(tmp / 'dump.py', config, dump), ckpt,
                    '--work-dir', tmp / 'test')
    with open(dump, 'rb') as f:
        predictions = {p['token']: p for p in pickle.load(f)}
    return dict(config=config, ckpt=ckpt, train_out=train_out, test_out=test_out,
                predictions=predictions, tmp=tmp, root=synthetic_dataroot)


def test_mmdet3d_tools_train_one_iteration_and_evaluate(run):
    assert run['ckpt'].is_file()
    assert 'Epoch(train) [1][1/1]' in run['train_out']   # exactly one iteration
    assert 'det/loss_heatmap' in run['train_out'] and 'seg/loss_divider' in run['train_out']
    assert 'NuScenes metric/pred_instances_3d_NuScenes/NDS' in run['test_out']
    assert 'map/mIoU@0.5' in run['test_out']
    assert len(run['predictions']) == 4  # the generated val split: 1 scene x 4 keyframes


def _assert_same(result, dumped):
    pred = dumped['pred_instances_3d']
    assert result.token == dumped['token']
    assert result.bboxes_3d.tensor.shape == pred['bboxes_3d'].tensor.shape
    torch.testing.assert_close(result.bboxes_3d.tensor, pred['bboxes_3d'].tensor,
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(result.scores_3d, pred['scores_3d'], rtol=0, atol=1e-6)
    assert torch.equal(result.labels_3d, pred['labels_3d'])
    torch.testing.assert_close(result.map_probs, torch.as_tensor(dumped['pred_masks_bev']),
                               rtol=0, atol=1e-6)


def test_init_model_and_inference_match_the_test_tool(run):
    from mmdet3d.apis import init_model

    from fuller.apis import build_sample_parser, inference_multitask, load_info
    from fuller.structures import MAP_CLASSES, BEVGrid
    model = init_model(run['config'], str(run['ckpt']), device='cpu')
    parser = build_sample_parser(model.cfg)
    ann = osp.join(run['root'], 'nuscenes_infos_val.pkl')
    for token, dumped in run['predictions'].items():
        result = inference_multitask(model, load_info(ann, token), parser=parser)
        _assert_same(result, dumped)
    assert result.map_classes == tuple(MAP_CLASSES)
    assert result.map_grid == BEVGrid((-50.0, 50.0), (-50.0, 50.0), 0.5)
    assert result.map_probs.shape == (6, 200, 200)  # 100 m / 0.5 m
    assert result.bboxes_3d.tensor.shape[1] == 9 and len(result.class_names) == 10


def test_fuller_test_tool_dumps_the_same_predictions(run):
    dump = run['tmp'] / 'fuller_dump.pkl'
    _run(REPO_ROOT / 'tools' / 'test.py', _dumping(run['tmp'] / 'dump2.py', run['config'], dump),
         run['ckpt'], '--work-dir', run['tmp'] / 'test2')
    with open(dump, 'rb') as f:
        ours = {p['token']: p for p in pickle.load(f)}
    assert set(ours) == set(run['predictions'])
    for token, mine in ours.items():
        theirs = run['predictions'][token]['pred_instances_3d']
        assert torch.equal(mine['pred_instances_3d']['bboxes_3d'].tensor,
                           theirs['bboxes_3d'].tensor)
        assert torch.equal(mine['pred_masks_bev'], run['predictions'][token]['pred_masks_bev'])


def test_a_sample_from_file_paths_predicts_as_its_info(run):
    from mmengine.config import Config
    from mmengine.runner import load_checkpoint

    from fuller.apis import inference_multitask, load_info, sample_from_files
    from fuller.testing import build_model_from_config
    cfg = Config.fromfile(run['config'])
    model = build_model_from_config(cfg, init_weights=False)
    load_checkpoint(model, str(run['ckpt']), map_location='cpu', logger='silent')
    model.cfg = cfg
    model.eval()
    root = Path(run['root'])
    token = sorted(run['predictions'])[0]
    info = load_info(str(root / 'nuscenes_infos_val.pkl'), token)
    prefix = cfg.test_dataloader.dataset.data_prefix
    images = {cam: root / prefix[cam] / v['img_path'] for cam, v in info['images'].items()}
    calibration = dict(lidar2ego=info['lidar_points']['lidar2ego'],
                       ego2global=info['ego2global'],
                       **{cam: {k: v[k] for k in ('cam2img', 'lidar2cam', 'cam2ego')}
                          for cam, v in info['images'].items()})
    # earlier frames: sweeps/ files, or keyframes under samples/ (info paths: from the root)
    sweeps = [dict(s, lidar_points=dict(s['lidar_points'],
                                        lidar_path=str(root / s['lidar_points']['lidar_path'])))
              for s in info['lidar_sweeps']]
    sample = sample_from_files(root / prefix['pts'] / info['lidar_points']['lidar_path'],
                               images, calibration, token=token,
                               timestamp=info['timestamp'], sweeps=sweeps)
    _assert_same(inference_multitask(model, sample), run['predictions'][token])


def test_visualize_tool_draws_the_api_predictions(run, monkeypatch):
    from fuller.testing import load_script
    tool = load_script(REPO_ROOT / 'tools' / 'analysis' / 'visualize.py', 'visualize_api')
    drawn = []
    original = tool.view_prediction

    def spy(result):
        drawn.append(result)
        return original(result)

    monkeypatch.setattr(tool, 'view_prediction', spy)
    token = sorted(run['predictions'])[-1]
    out = run['tmp'] / 'pictures'
    tool.main([run['config'], str(run['ckpt']), '--tokens', token, '--out-dir', str(out)])
    assert (out / f'{token}.png').stat().st_size > 10_000
    assert len(drawn) == 1
    _assert_same(drawn[0], run['predictions'][token])
