"""NuScenesSubmissionMetric writes a file that the devkit scores exactly as
mmdet3d's in-loop NuScenesMetric scores the same predictions, with the
submission rules on top (meta, <= 500 boxes, every token, finite)."""
import json
import pickle

import numpy as np
import pytest
import torch
from mmdet3d.structures import LiDARInstance3DBoxes

from fuller.evaluation.metrics import NuScenesSubmissionMetric
from fuller.evaluation.submission import (VALID_ATTRIBUTES,
                                          tokens_from_dataroot,
                                          validate_submission)

CLASSES = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle',
           'bicycle', 'motorcycle', 'pedestrian', 'traffic_cone', 'barrier')
MODALITY = dict(use_lidar=True, use_camera=True)


def _gt_predictions(infos, jitter=0.0, seed=0):
    """The val ground truth as predictions (LiDAR frame, score 0.9),
    optionally with the centres shifted by up to ``jitter`` m."""
    rng = np.random.default_rng(seed)
    results = []
    for i, info in enumerate(infos):
        inst = [x for x in info['instances'] if x['bbox_label_3d'] >= 0]
        boxes = np.array([[*x['bbox_3d'], *np.nan_to_num(x['velocity'])]
                          for x in inst], np.float32).reshape(-1, 9)
        boxes[:, :2] += rng.uniform(-jitter, jitter, (len(boxes), 2))
        results.append(dict(sample_idx=i, pred_instances_3d=dict(
            bboxes_3d=LiDARInstance3DBoxes(boxes, box_dim=9,
                                           origin=(0.5, 0.5, 0.5)),
            scores_3d=torch.full((len(boxes), ), 0.9),
            labels_3d=torch.tensor([x['bbox_label_3d'] for x in inst],
                                   dtype=torch.long))))
    return results


def _meta():
    return dict(classes=CLASSES, version='v1.0-mini')


@pytest.fixture(scope='module')
def val(synthetic_dataroot):
    ann = synthetic_dataroot / 'nuscenes_infos_val.pkl'
    infos = pickle.loads(ann.read_bytes())['data_list']
    return synthetic_dataroot, ann, infos


def test_file_scores_as_the_in_loop_metric(val, tmp_path):
    from mmdet3d.evaluation.metrics import NuScenesMetric
    from nuscenes import NuScenes
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval
    root, ann, infos = val
    results = _gt_predictions(infos, jitter=0.6)
    in_loop = NuScenesMetric(data_root=str(root), ann_file=str(ann),
                             modality=MODALITY,
                             jsonfile_prefix=str(tmp_path / 'in_loop'))
    in_loop.dataset_meta = _meta()
    expected = in_loop.compute_metrics(results)
    writer = NuScenesSubmissionMetric(data_root=str(root), ann_file=str(ann),
                                      out_file=str(tmp_path / 'sub.json'),
                                      modality=MODALITY)
    writer.dataset_meta = _meta()
    assert writer.compute_metrics(_gt_predictions(infos, jitter=0.6)) == {}
    nusc = NuScenes('v1.0-mini', str(root), verbose=False)
    devkit = DetectionEval(nusc, config_factory('detection_cvpr_2019'),
                           str(tmp_path / 'sub.json'), 'mini_val',
                           str(tmp_path / 'devkit'), verbose=False)
    summary = devkit.evaluate()[0].serialize()
    key = 'pred_instances_3d_NuScenes'
    assert summary['mean_ap'] == pytest.approx(expected[f'{key}/mAP'],
                                               abs=1e-9)
    assert summary['nd_score'] == pytest.approx(expected[f'{key}/NDS'],
                                                abs=1e-9)
    # GT shifted by up to 0.85 m: matched at 1, 2, 4 m, partly at 0.5 m
    assert 0.5 < summary['mean_ap'] < 0.95
    assert summary['tp_errors']['attr_err'] < 0.5
    data = json.loads((tmp_path / 'sub.json').read_text())
    assert data['meta'] == dict(use_camera=True, use_lidar=True,
                                use_radar=False, use_map=False,
                                use_external=False)
    for boxes in data['results'].values():
        for box in boxes:
            assert box['attribute_name'] in VALID_ATTRIBUTES[
                box['detection_name']]
    summary = validate_submission(
        str(tmp_path / 'sub.json'),
        tokens_from_dataroot(str(root), 'v1.0-mini', 'val'))
    assert summary['samples'] == len(infos)


def test_cap_empty_samples_and_non_finite(val, tmp_path):
    root, ann, infos = val
    results = _gt_predictions(infos)
    # sample 0: 600 boxes with distinct scores; sample 1: none
    boxes = np.zeros((600, 9), np.float32)
    boxes[:, 0] = np.linspace(1, 30, 600)
    boxes[:, 3:6] = (4.0, 2.0, 1.5)
    scores = torch.from_numpy(np.random.default_rng(0).permutation(600) /
                              600.0).float()
    results[0]['pred_instances_3d'] = dict(
        bboxes_3d=LiDARInstance3DBoxes(boxes, box_dim=9), scores_3d=scores,
        labels_3d=torch.zeros(600, dtype=torch.long))
    results[1]['pred_instances_3d'] = dict(
        bboxes_3d=LiDARInstance3DBoxes(torch.zeros(0, 9), box_dim=9),
        scores_3d=torch.zeros(0), labels_3d=torch.zeros(0, dtype=torch.long))
    writer = NuScenesSubmissionMetric(data_root=str(root), ann_file=str(ann),
                                      out_file=str(tmp_path / 'sub.json'),
                                      modality=MODALITY)
    writer.dataset_meta = _meta()
    writer.compute_metrics(results)
    data = json.loads((tmp_path / 'sub.json').read_text())['results']
    assert set(data) == {i['token'] for i in infos}
    kept = [b['detection_score'] for b in data[infos[0]['token']]]
    assert len(kept) == 500
    assert min(kept) == pytest.approx(100 / 600) and max(kept) == \
        pytest.approx(599 / 600)
    assert data[infos[1]['token']] == []
    # a NaN from the model is an error naming the sample; no file written
    boxes[3, 0] = np.nan
    results[0]['pred_instances_3d']['bboxes_3d'] = LiDARInstance3DBoxes(
        boxes, box_dim=9)
    writer.out_file = str(tmp_path / 'nan.json')
    with pytest.raises(FloatingPointError, match=infos[0]['token']):
        writer.compute_metrics(results)
    assert not (tmp_path / 'nan.json').exists()
    # a sample of the info file without a prediction
    with pytest.raises(RuntimeError, match='1 of the'):
        writer.compute_metrics(results[1:])
