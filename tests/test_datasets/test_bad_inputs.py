"""The bad-input matrix on the generated dataroot, through the real tiny
config's datasets: each broken input fails with an error that names the file
or key (and says how to fix it where there is a fix), and nothing is written;
samples and scenes without annotations train and evaluate.

Every test corrupts its own copy of the session's ``synthetic_dataroot``
(2 scenes of 4 keyframes: scene 0 mini_train, scene 1 mini_val).
"""
import copy
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.registry import init_default_scope

import fuller  # noqa: F401
from fuller.data_prep.nuscenes_infos import create_nuscenes_data
from fuller.utils.config_utils import load_config, set_data_root
from mmdet3d.registry import DATASETS, METRICS, MODELS
from mmdet3d.structures import LiDARInstance3DBoxes
from fuller.testing import REPO_ROOT

CONFIG = REPO_ROOT / 'configs' / 'fuller' / 'fuller_tiny_1xb2-24e_synthetic-nus.py'
TRAIN_PKL = 'nuscenes_infos_train.pkl'
VAL_PKL = 'nuscenes_infos_val.pkl'
CLASS_NAMES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle',
               'bicycle', 'motorcycle', 'pedestrian', 'traffic_cone',
               'barrier')  # the config's order


@pytest.fixture(autouse=True, scope='module')
def mmdet3d_scope():
    init_default_scope('mmdet3d')


@pytest.fixture
def root(synthetic_dataroot, tmp_path):
    """A private copy of the generated dataroot, safe to corrupt."""
    dst = tmp_path / 'data'
    shutil.copytree(synthetic_dataroot, dst)
    return dst


def tiny_cfg(data_root):
    cfg = load_config(str(CONFIG))
    set_data_root(cfg, str(data_root))
    return cfg


def build_dataset(data_root, split='train', **overrides):
    cfg = tiny_cfg(data_root)
    loader = cfg.train_dataloader if split == 'train' else cfg.val_dataloader
    ds_cfg = copy.deepcopy(loader.dataset)
    ds_cfg.update(overrides)
    return DATASETS.build(ds_cfg)


def read_infos(root, pkl=TRAIN_PKL):
    with open(root / pkl, 'rb') as f:
        return pickle.load(f)


def write_infos(root, data, pkl=TRAIN_PKL):
    with open(root / pkl, 'wb') as f:
        pickle.dump(data, f)


def tree_snapshot(root):
    """Relative path -> size of every file under ``root``."""
    return {str(p.relative_to(root)): p.stat().st_size
            for p in root.rglob('*') if p.is_file()}


# ------------------------------------------------------------------ LiDAR
def _corrupt_points(path, how):
    data = np.fromfile(path, dtype=np.float32)
    if how == 'truncated':  # 7 bytes short: not a whole number of points
        path.write_bytes(data.tobytes()[:-7])
    else:
        data[13] = np.nan if how == 'nan' else np.inf
        data.tofile(path)


@pytest.mark.parametrize('how,match', [
    ('truncated', 'not a multiple of 20'),
    ('nan', 'NaN/inf'),
    ('inf', 'NaN/inf'),
])
def test_bad_lidar_keyframe_names_the_file(root, how, match):
    ds = build_dataset(root)
    path = Path(ds.get_data_info(0)['lidar_points']['lidar_path'])
    assert path.is_file() and str(path).startswith(str(root))
    _corrupt_points(path, how)
    before = tree_snapshot(root)
    with pytest.raises(ValueError, match=match) as err:
        ds[0]
    assert str(path) in str(err.value)
    assert tree_snapshot(root) == before


def test_bad_lidar_sweep_names_the_file(root):
    ds = build_dataset(root)
    index = next(i for i in range(len(ds))
                 if ds.get_data_info(i).get('lidar_sweeps'))
    sweeps = [Path(s['lidar_points']['lidar_path'])
              for s in ds.get_data_info(index)['lidar_sweeps']]
    for path in sweeps:
        assert path.is_file()
        _corrupt_points(path, 'truncated')
    with pytest.raises(ValueError, match='not a multiple of 20') as err:
        ds[index]
    assert any(str(p) in str(err.value) for p in sweeps)


# ----------------------------------------------------------------- images
@pytest.mark.parametrize('how,error,match', [
    ('missing', FileNotFoundError, 'Image file not found'),
    ('garbage', ValueError, 'cannot be decoded'),
    ('truncated', ValueError, 'truncated JPEG'),
])
def test_bad_camera_image_names_the_file(root, how, error, match):
    ds = build_dataset(root)
    path = Path(ds.get_data_info(0)['images']['CAM_BACK']['img_path'])
    data = path.read_bytes()
    if how == 'missing':
        path.unlink()
    elif how == 'garbage':
        path.write_bytes(bytes(range(256)) * 8)
    else:
        path.write_bytes(data[:len(data) // 2])
    with pytest.raises(error, match=match) as err:
        ds[0]
    assert str(path) in str(err.value)


def test_create_data_missing_image_names_it_and_writes_nothing(root,
                                                               tmp_path):
    victim = sorted((root / 'samples' / 'CAM_FRONT_LEFT').iterdir())[2]
    victim.unlink()
    out = tmp_path / 'out'
    with pytest.raises(FileNotFoundError, match='Camera image not found') \
            as err:
        create_nuscenes_data(str(root), str(out), 'v1.0-mini',
                             skip_map_masks=True, progress=False)
    assert str(victim) in str(err.value)
    assert not out.exists()


# ------------------------------------------------------------ calibration
@pytest.mark.parametrize('key,shape', [
    ('images.CAM_FRONT.lidar2cam', (3, 3)),
    ('images.CAM_BACK_LEFT.cam2ego', (3, 4)),
    ('images.CAM_BACK.cam2img', (2, 2)),
    ('lidar_points.lidar2ego', (3, 3)),
    ('ego2global', (4, 3)),
])
def test_calibration_matrix_of_wrong_shape_names_key_and_sample(
        root, key, shape):
    data = read_infos(root)
    entry = data['data_list'][2]
    *parents, leaf = key.split('.')
    node = entry
    for part in parents:
        node = node[part]
    node[leaf] = np.eye(*shape).tolist()
    write_infos(root, data)
    with pytest.raises(ValueError) as err:
        build_dataset(root)
    msg = str(err.value)
    assert key in msg and entry['token'] in msg
    assert str(root / TRAIN_PKL) in msg
    assert f'{shape}' in msg and '(4, 4)' in msg
    assert 'tools/create_data.py' in msg


def test_sweep_transform_of_wrong_shape_names_the_sweep(root):
    data = read_infos(root)
    entry = next(e for e in data['data_list'] if e.get('lidar_sweeps'))
    entry['lidar_sweeps'][0]['lidar_points']['lidar2sensor'] = \
        np.eye(3).tolist()
    write_infos(root, data)
    ds = build_dataset(root)
    index = data['data_list'].index(entry)
    with pytest.raises(ValueError, match='lidar2sensor must be 4x4') as err:
        ds[index]
    sweep = ds.get_data_info(index)['lidar_sweeps'][0]
    assert sweep['lidar_points']['lidar_path'] in str(err.value)


# ------------------------------------------------- classes and data root
def test_unknown_class_in_config_names_it_and_the_valid_ones(root):
    classes = ['car', 'truck', 'pedestrain']
    with pytest.raises(ValueError) as err:
        build_dataset(root, metainfo=dict(classes=classes,
                                          version='v1.0-mini'))
    msg = str(err.value)
    assert "'pedestrain'" in msg and "'pedestrian'" in msg
    assert "'traffic_cone'" in msg  # the whole valid list
    with pytest.raises(ValueError, match=r"\['car'\] more than once"):
        build_dataset(root, metainfo=dict(classes=['car', 'bus', 'car'],
                                          version='v1.0-mini'))
    # the same classes spelt right build
    ok = build_dataset(root, metainfo=dict(classes=['car', 'pedestrian'],
                                           version='v1.0-mini'))
    assert ok.metainfo['classes'] == ['car', 'pedestrian']


def test_wrong_data_root_names_the_path_and_how_to_create_it(tmp_path):
    missing = tmp_path / 'no-such-root'
    with pytest.raises(FileNotFoundError) as err:
        build_dataset(missing)
    msg = str(err.value)
    assert str(missing / TRAIN_PKL) in msg
    assert f'data_root {missing}/ does not exist' in msg
    assert 'python tools/create_data.py nuscenes' in msg
    assert '--data-root' in msg
    assert not missing.exists()
    # a dataroot that exists but was never converted
    bare = tmp_path / 'bare'
    bare.mkdir()
    with pytest.raises(FileNotFoundError, match='tools/create_data.py') as err:
        build_dataset(bare, split='val')
    assert str(bare / VAL_PKL) in str(err.value)
    assert list(bare.iterdir()) == []


def test_create_data_on_wrong_root_writes_nothing(tmp_path):
    out = tmp_path / 'out'
    with pytest.raises(FileNotFoundError) as err:
        create_nuscenes_data(str(tmp_path / 'nope'), str(out), 'v1.0-mini',
                             progress=False)
    assert str(tmp_path / 'nope' / 'v1.0-mini') in str(err.value)
    assert not out.exists()


# ------------------------------------------- empty samples, empty scenes
def strip_annotations(root, sample_tokens):
    """Delete the annotations of ``sample_tokens`` from the tables, keeping
    the prev/next chains and the instance table consistent."""
    table_dir = root / 'v1.0-mini'
    anns = json.loads((table_dir / 'sample_annotation.json').read_text())
    removed = {a['token'] for a in anns if a['sample_token'] in sample_tokens}
    kept = [a for a in anns if a['token'] not in removed]
    for a in kept:
        a['prev'] = '' if a['prev'] in removed else a['prev']
        a['next'] = '' if a['next'] in removed else a['next']
    instances = json.loads((table_dir / 'instance.json').read_text())
    by_instance = {}
    for a in kept:
        by_instance.setdefault(a['instance_token'], []).append(a)
    new_instances = []
    for inst in instances:
        own = by_instance.get(inst['token'])
        if not own:
            continue
        inst['nbr_annotations'] = len(own)
        inst['first_annotation_token'] = next(
            a['token'] for a in own if a['prev'] == '')
        inst['last_annotation_token'] = next(
            a['token'] for a in own if a['next'] == '')
        new_instances.append(inst)
    (table_dir / 'sample_annotation.json').write_text(json.dumps(kept))
    (table_dir / 'instance.json').write_text(json.dumps(new_instances))
    assert removed


def samples_of_split(root, pkl):
    return [e['token'] for e in read_infos(root, pkl)['data_list']]


def reconvert(root):
    create_nuscenes_data(str(root), str(root), 'v1.0-mini',
                         skip_map_masks=True, progress=False)


@pytest.fixture(scope='module')
def heads():
    """The tiny config's detection and map heads (the model's parts that
    read annotations); the shared BEV map they read is (B, 64, 90, 90)."""
    cfg = load_config(str(CONFIG))
    torch.manual_seed(0)
    return [MODELS.build(copy.deepcopy(cfg.model[k]))
            for k in ('det_head', 'seg_head')]


def train_step_on(heads, samples):
    """Both heads' losses on a random shared BEV map for the packed
    ``samples``, and their backward pass; every loss must be finite."""
    data_samples = [s['data_samples'] for s in samples]
    feats = torch.randn(len(samples), 64, 90, 90, requires_grad=True)
    losses = {}
    for prefix, head in zip(('det', 'seg'), heads):
        head.train()
        for name, value in head.loss(feats, data_samples).items():
            losses[f'{prefix}/{name}'] = value
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total), losses
    total.backward()
    assert torch.isfinite(feats.grad).all()
    return losses


def gt_as_predictions(dataset, extra=None):
    """NuScenesMetric inputs predicting each sample's evaluation boxes with
    score 0.5; ``extra`` = {index: (box row, label, score)} adds one box."""
    outputs = []
    for i in range(len(dataset)):
        ann = dataset.get_data_info(i)['eval_ann_info']
        keep = torch.as_tensor(ann['gt_labels_3d']) >= 0
        boxes = ann['gt_bboxes_3d'].tensor[keep]
        labels = torch.as_tensor(ann['gt_labels_3d'])[keep]
        scores = torch.full((len(labels), ), 0.5)
        if extra and i in extra:
            row, label, score = extra[i]
            boxes = torch.cat([boxes, torch.tensor([row])])
            labels = torch.cat([labels, torch.tensor([label])])
            scores = torch.cat([scores, torch.tensor([score])])
        outputs.append(dict(
            pred_instances_3d=dict(
                bboxes_3d=LiDARInstance3DBoxes(boxes, box_dim=9),
                labels_3d=labels, scores_3d=scores),
            pred_instances=dict(), sample_idx=i))
    return outputs


def evaluate_det(root, dataset, outputs, tmp_dir):
    cfg = tiny_cfg(root)
    metric = METRICS.build(dict(cfg.val_evaluator[0],
                                jsonfile_prefix=str(tmp_dir)))
    metric.dataset_meta = dataset.metainfo
    metric.process({}, outputs)
    return {k.split('/')[-1]: v
            for k, v in metric.evaluate(len(outputs)).items()}


def test_train_and_val_samples_without_annotations(root, heads, tmp_path):
    train_tokens = samples_of_split(root, TRAIN_PKL)
    val_tokens = samples_of_split(root, VAL_PKL)
    strip_annotations(root, {train_tokens[1], val_tokens[1]})
    reconvert(root)
    assert read_infos(root)['data_list'][1]['instances'] == []
    assert read_infos(root, VAL_PKL)['data_list'][1]['instances'] == []
    # train, filter_empty_gt=False: the empty sample is used, with no boxes
    train = build_dataset(root, filter_empty_gt=False)
    empty, full = train[1], train[0]
    assert len(empty['data_samples'].gt_instances_3d.bboxes_3d) == 0
    assert len(full['data_samples'].gt_instances_3d.bboxes_3d) > 0
    losses = train_step_on(heads, [empty, full])
    assert losses['det/loss_bbox'] > 0  # from the full sample
    # the config's default (filter_empty_gt=True) draws another sample
    filtered = build_dataset(root)
    assert len(filtered[1]['data_samples'].gt_instances_3d.bboxes_3d) > 0
    # val: the devkit evaluates the empty sample as one without ground
    # truth. Predictions = the evaluation boxes of every sample; adding one
    # confident car on the empty sample is a false positive ranked first,
    # so car AP must drop.
    val = build_dataset(root, split='val', pipeline=[])
    assert len(val.get_data_info(1)['eval_ann_info']['gt_labels_3d']) == 0
    perfect = evaluate_det(root, val, gt_as_predictions(val), tmp_path / 'a')
    false_car = ([5.0, 5.0, -1.5, 4.0, 1.8, 1.6, 0.0, 0.0, 0.0], 0, 0.9)
    with_fp = evaluate_det(root, val, gt_as_predictions(val, {1: false_car}),
                           tmp_path / 'b')
    for name in CLASS_NAMES:
        assert 0 <= perfect[f'{name}_AP_dist_2.0'] <= 1, name
    assert perfect['car_AP_dist_2.0'] > 0.9
    assert with_fp['car_AP_dist_2.0'] < perfect['car_AP_dist_2.0']
    assert np.isfinite(with_fp['NDS'])
    for sub, count in (('a', 0), ('b', 1)):
        submitted = json.loads(
            (tmp_path / sub / 'pred_instances_3d' /
             'results_nusc.json').read_text())['results']
        assert len(submitted[val_tokens[1]]) == count


def test_scene_without_annotations(root, heads):
    strip_annotations(root, set(samples_of_split(root, TRAIN_PKL)))
    reconvert(root)
    assert all(e['instances'] == []
               for e in read_infos(root)['data_list'])
    # filter_empty_gt would drop every sample: a clear error, not the
    # "cannot find valid image after 1000 refetches" loop
    with pytest.raises(ValueError) as err:
        build_dataset(root)
    msg = str(err.value)
    assert str(root / TRAIN_PKL) in msg and 'filter_empty_gt=False' in msg
    train = build_dataset(root, filter_empty_gt=False)
    samples = [train[0], train[1]]
    assert all(len(s['data_samples'].gt_instances_3d.bboxes_3d) == 0
               for s in samples)
    losses = train_step_on(heads, samples)
    assert losses['det/loss_bbox'] == 0
    assert losses['det/loss_cls'] > 0  # every query is background


def test_info_file_without_samples(root):
    data = read_infos(root)
    data['data_list'] = []
    write_infos(root, data)
    with pytest.raises(ValueError, match='holds no samples') as err:
        build_dataset(root)
    assert str(root / TRAIN_PKL) in str(err.value)
