"""Everything one prediction picture shows, gathered from an info entry, a
results file or a model.

Shape shorthand: P points, M boxes, C map classes, Y/X map rows/columns,
H x W image pixels.

Frames: as :mod:`fuller.visualization.geometry`. Boxes are (M, 7)
gravity-centre boxes in the keyframe ``lidar`` frame; map masks are
(C, Y, X) on a :class:`fuller.structures.BEVGrid` in the same frame
(row = y, column = x).
"""
import json
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np

from fuller.datasets.map_mask_io import MAP_CLASSES, load_map_masks
from fuller.datasets.transforms.loading import CAMERAS, load_points
from fuller.structures.frames import BEVGrid

from .geometry import as_boxes, nusc_results_to_lidar


@dataclass
class CameraView:
    """One camera: RGB image (H, W, 3) uint8 and its matrices."""
    name: str
    image: np.ndarray
    lidar2cam: np.ndarray
    cam2img: np.ndarray


@dataclass
class BoxSet:
    """(M, 7) lidar boxes with labels (M,) and, for predictions, scores."""
    boxes: np.ndarray
    labels: np.ndarray
    scores: Optional[np.ndarray] = None

    def __post_init__(self):
        self.boxes = as_boxes(self.boxes)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, np.float64).reshape(-1)
        if len(self.labels) != len(self.boxes) or (
                self.scores is not None and len(self.scores) != len(self.boxes)):
            raise ValueError(f'BoxSet: {len(self.boxes)} boxes, '
                             f'{len(self.labels)} labels, scores '
                             f'{None if self.scores is None else len(self.scores)}')

    def above(self, score_thr: float) -> 'BoxSet':
        """The boxes scoring at least ``score_thr`` (all when no scores)."""
        if self.scores is None:
            return self
        keep = self.scores >= score_thr
        return BoxSet(self.boxes[keep], self.labels[keep], self.scores[keep])


@dataclass
class SampleView:
    """One sample as drawn: points, cameras, GT and predictions."""
    token: str
    points: np.ndarray
    cameras: List[CameraView]
    gt: BoxSet
    class_names: Sequence[str]
    pred: Optional[BoxSet] = None
    gt_masks: Optional[np.ndarray] = None      # (C, Y, X) bool
    pred_masks: Optional[np.ndarray] = None    # (C, Y, X) probability
    map_grid: Optional[BEVGrid] = None
    map_classes: Sequence[str] = MAP_CLASSES
    ego_forward: np.ndarray = field(
        default_factory=lambda: np.array([1.0, 0.0]))  # lidar xy
    title: str = ''

    def __post_init__(self):
        for name in ('gt_masks', 'pred_masks'):
            masks = getattr(self, name)
            if masks is None:
                continue
            if self.map_grid is None:
                raise ValueError(f'SampleView {self.token}: {name} given '
                                 'without map_grid')
            shape = (len(self.map_classes), ) + self.map_grid.shape
            if tuple(masks.shape) != shape:
                raise ValueError(
                    f'SampleView {self.token}: {name} has shape '
                    f'{tuple(masks.shape)}, expected (C, Y, X) = {shape} for '
                    f'the map grid {self.map_grid}')


def load_info_file(path: str) -> List[dict]:
    """The ``data_list`` of an mmdet3d v2 info pkl; errors name the file."""
    import mmengine
    if not osp.isfile(path):
        raise FileNotFoundError(f'info file {path} does not exist')
    data = mmengine.load(path)
    if not isinstance(data, dict) or not isinstance(data.get('data_list'),
                                                    list):
        raise ValueError(f'info file {path} is not an mmdet3d v2 info file '
                         "(a dict with a 'data_list' list)")
    return data['data_list']


def _prefixed(data_root: str, prefix: str, name: str) -> str:
    return osp.join(data_root, prefix, name)


def load_results_file(path: str) -> Dict[str, List[dict]]:
    """``results`` of a nuScenes detection submission (results_nusc.json)."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'results file {path} does not exist')
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get('results'), dict):
        raise ValueError(f'results file {path} is not a nuScenes submission '
                         "(a dict with a 'results' dict keyed by sample token)")
    return data['results']


def gt_boxes_of(info: dict) -> BoxSet:
    """The info's annotated boxes of a known class that have LiDAR or radar
    points (mmdet3d's valid flag)."""
    boxes, labels = [], []
    for inst in info.get('instances', []):
        label = int(inst.get('bbox_label_3d', inst.get('bbox_label', -1)))
        valid = bool(inst.get('bbox_3d_isvalid', True))
        if label >= 0 and valid:
            boxes.append(inst['bbox_3d'][:7])
            labels.append(label)
    return BoxSet(np.asarray(boxes, np.float64).reshape(-1, 7), labels)


def read_rgb(path: str) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f'camera image {path} is missing or cannot '
                                'be decoded')
    return img[..., ::-1]


def load_sample_view(info: dict, data_root: str, data_prefix: dict,
                     class_names: Sequence[str],
                     map_grid: Optional[BEVGrid] = None,
                     map_classes: Sequence[str] = MAP_CLASSES,
                     cameras: Sequence[str] = CAMERAS) -> SampleView:
    """Points, images, GT boxes and (when cached) GT map masks of an info.

    Args:
        info: one raw ``data_list`` entry (file names as stored).
        data_root, data_prefix: as in the dataset config (``pts``, one key
            per camera, optionally ``map_mask_root``).
        map_grid: the grid of the cached map masks; None draws no map.
    """
    lidar_path = _prefixed(data_root, data_prefix.get('pts', ''),
                           info['lidar_points']['lidar_path'])
    num_feats = int(info['lidar_points'].get('num_pts_feats', 5))
    points = load_points(lidar_path, num_feats)[:, :4]
    cams = []
    for cam in cameras:
        if cam not in info.get('images', {}):
            continue
        rec = info['images'][cam]
        path = _prefixed(data_root, data_prefix.get(cam, ''), rec['img_path'])
        cams.append(CameraView(cam, read_rgb(path),
                               np.asarray(rec['lidar2cam'], np.float64),
                               np.asarray(rec['cam2img'], np.float64)))
    gt_masks = None
    if map_grid is not None and info.get('map_mask_path'):
        gt_masks = load_map_masks(
            _prefixed(data_root, data_prefix.get('map_mask_root', ''),
                      info['map_mask_path']), map_classes)
    lidar2ego = np.asarray(info['lidar_points']['lidar2ego'], np.float64)
    ego_forward = np.linalg.inv(lidar2ego)[:2, 0]  # ego +x in lidar xy
    return SampleView(token=info['token'], points=points, cameras=cams,
                      gt=gt_boxes_of(info), class_names=tuple(class_names),
                      gt_masks=gt_masks,
                      map_grid=map_grid if gt_masks is not None else None,
                      map_classes=tuple(map_classes),
                      ego_forward=ego_forward / np.linalg.norm(ego_forward))


def results_for_info(results: Dict[str, List[dict]], info: dict,
                     class_names: Sequence[str]) -> BoxSet:
    """The submission's boxes of this sample in its lidar frame (none when
    the file has no entry for it)."""
    conv = nusc_results_to_lidar(results.get(info['token'], []),
                                 info['ego2global'],
                                 info['lidar_points']['lidar2ego'],
                                 class_names)
    return BoxSet(conv['boxes'], conv['labels'], conv['scores'])
