"""The official nuScenes detection submission file, written by a metric.

Frames: predictions arrive as ``LiDARInstance3DBoxes`` in the keyframe LiDAR
frame (bottom centre, yaw from +x towards +y, velocity (vx, vy) in m/s);
they leave as devkit boxes in the ``global`` frame (gravity centre, size
w, l, h, rotation quaternion, velocity), moved through ``lidar2ego`` and
``ego2global`` of the sample's info by mmdet3d's own ``output_to_nusc_box``
and ``lidar_nusc_box_to_global`` (which also drop boxes beyond the class's
evaluation range, as the devkit would).

What this adds to mmdet3d's ``NuScenesMetric`` (see
``fuller.evaluation.submission`` for the rules): the full meta block, at
most 500 boxes per sample by score, an entry (``[]`` if empty) for every
sample token of the info file, finite numbers only (a NaN from the model is
an error naming the sample, not a silently broken file), plain JSON floats,
and an atomic write to a named file.
"""
import json
import math
import os.path as osp
from typing import Dict, List, Optional

import torch
from mmdet3d.evaluation.metrics import NuScenesMetric
from mmdet3d.evaluation.metrics.nuscenes_metric import (
    lidar_nusc_box_to_global, output_to_nusc_box)
from mmdet3d.registry import METRICS
from mmdet3d.structures import LiDARInstance3DBoxes
from mmengine import load
from mmengine.logging import MMLogger

from fuller.utils.io import atomic_open

from ..submission import (MAX_BOXES_PER_SAMPLE, VALID_ATTRIBUTES,
                          attribute_from_velocity, keep_top_scoring,
                          submission_meta)


@METRICS.register_module()
class NuScenesSubmissionMetric(NuScenesMetric):
    """Write ``out_file`` in the submission format; evaluate it with the
    devkit unless ``format_only``.

    Args:
        data_root: nuScenes dataroot (tables, for the devkit evaluation).
        ann_file: the info file of the evaluated split (tokens and poses).
        out_file: the JSON file to write (e.g. ``.../results_nusc.json``).
        modality: mmdet3d modality dict; gives the meta block (flags not
            given are false).
        format_only: only write the file (test split: no ground truth).
        max_boxes_per_sample: the server's per-sample cap.
        eval_version, collect_device, prefix, backend_args: as in
            ``NuScenesMetric``.
    """

    def __init__(self,
                 data_root: str,
                 ann_file: str,
                 out_file: str,
                 modality: Optional[dict] = None,
                 format_only: bool = True,
                 max_boxes_per_sample: int = MAX_BOXES_PER_SAMPLE,
                 eval_version: str = 'detection_cvpr_2019',
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 backend_args: Optional[dict] = None) -> None:
        self.meta = submission_meta(modality)
        super().__init__(data_root=data_root,
                         ann_file=ann_file,
                         metric='bbox',
                         modality=dict(modality or {}),
                         prefix=prefix,
                         format_only=format_only,
                         jsonfile_prefix=osp.dirname(osp.abspath(out_file)),
                         eval_version=eval_version,
                         collect_device=collect_device,
                         backend_args=backend_args)
        self.out_file = osp.abspath(out_file)
        self.max_boxes_per_sample = int(max_boxes_per_sample)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        logger = MMLogger.get_current_instance()
        classes = list(self.dataset_meta['classes'])
        unknown = [c for c in classes if c not in VALID_ATTRIBUTES]
        if unknown:
            raise ValueError(f'NuScenesSubmissionMetric: classes {unknown} '
                             f'are no nuScenes detection class')
        self.version = self.dataset_meta['version']
        self.data_infos = load(self.ann_file,
                               backend_args=self.backend_args)['data_list']
        submission = dict(meta=self.meta,
                          results=self.build_results(results, classes))
        with atomic_open(self.out_file) as f:
            json.dump(submission, f, separators=(',', ':'), allow_nan=False)
        logger.info(f'nuScenes submission written to {self.out_file}')
        if self.format_only:
            return {}
        return self._evaluate_single(self.out_file, classes=classes,
                                     result_name='pred_instances_3d')

    def build_results(self, results: List[dict],
                      classes: List[str]) -> Dict[str, List[dict]]:
        """sample token -> its boxes, for every sample of ``ann_file``."""
        out = {}
        for result in results:
            info = self.data_infos[result['sample_idx']]
            det = result['pred_instances_3d']
            if not isinstance(det['bboxes_3d'], LiDARInstance3DBoxes):
                raise TypeError(f'NuScenesSubmissionMetric: expected LiDAR '
                                f'boxes, got {type(det["bboxes_3d"])}')
            self._check_finite(info['token'], det, classes)
            boxes, _ = output_to_nusc_box(det)
            boxes = lidar_nusc_box_to_global(info, boxes, classes,
                                             self.eval_detection_configs)
            annos = [self._to_sample_result(info['token'], box, classes)
                     for box in boxes]
            out[info['token']] = keep_top_scoring(annos,
                                                  self.max_boxes_per_sample)
        missing = [i['token'] for i in self.data_infos if i['token'] not in out]
        if missing:
            raise RuntimeError(
                f'NuScenesSubmissionMetric: {len(missing)} of the '
                f'{len(self.data_infos)} samples of {self.ann_file} got no '
                f'prediction (e.g. {missing[:3]}); the test dataloader must '
                f'cover the whole info file')
        return out

    @staticmethod
    def _check_finite(token: str, det: dict, classes: List[str]) -> None:
        """A NaN/inf box or score from the model is an error naming the
        sample (the devkit's Box would fail on it with a bare assert)."""
        values = torch.cat([det['bboxes_3d'].tensor.flatten(),
                            det['scores_3d'].flatten().float()])
        if not torch.isfinite(values).all():
            bad = ~torch.isfinite(det['bboxes_3d'].tensor).all(dim=1)
            names = sorted({classes[int(i)] for i in det['labels_3d'][bad]})
            raise FloatingPointError(
                f'NuScenesSubmissionMetric: sample {token}: the model '
                f'predicted non-finite boxes or scores (classes {names}); '
                f'no submission written')

    @staticmethod
    def _to_sample_result(token: str, box, classes: List[str]) -> dict:
        """One devkit box (global frame) -> a ``sample_result`` dict."""
        name = classes[int(box.label)]
        anno = dict(sample_token=token,
                    translation=[float(v) for v in box.center],
                    size=[float(v) for v in box.wlh],
                    rotation=[float(v) for v in box.orientation.elements],
                    velocity=[float(v) for v in box.velocity[:2]],
                    detection_name=name,
                    detection_score=float(box.score))
        numbers = (anno['translation'] + anno['size'] + anno['rotation'] +
                   anno['velocity'] + [anno['detection_score']])
        if not all(math.isfinite(v) for v in numbers):
            raise FloatingPointError(
                f'NuScenesSubmissionMetric: sample {token}: the model '
                f'predicted a {name} box with non-finite values {anno}')
        anno['attribute_name'] = attribute_from_velocity(name,
                                                         anno['velocity'])
        return anno
