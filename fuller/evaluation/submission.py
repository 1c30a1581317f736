"""The nuScenes detection submission file: its rules, and a validator.

Format (nuScenes devkit, ``python-sdk/nuscenes/eval/detection/README.md``)::

    {"meta": {"use_camera": bool, "use_lidar": bool, "use_radar": bool,
              "use_map": bool, "use_external": bool},
     "results": {sample_token: [sample_result, ...], ...}}

    sample_result = {"sample_token": str,
                     "translation": [x, y, z],     # box centre, global frame, m
                     "size": [w, l, h],            # m
                     "rotation": [w, x, y, z],     # quaternion, global frame
                     "velocity": [vx, vy],         # global frame, m/s
                     "detection_name": str,        # one of the 10 classes
                     "detection_score": float,     # in [0, 1]
                     "attribute_name": str}        # valid for the class

Rules checked here (the first broken one is reported):

- the file is at most ``max_bytes`` big and parses as JSON;
- ``meta`` holds exactly the five boolean flags;
- ``results`` has one entry per sample token of the split, no other token,
  a list (possibly empty) per token, each box naming its own sample token;
- at most :data:`MAX_BOXES_PER_SAMPLE` boxes per sample (the server rejects
  more);
- ``detection_name`` among the devkit's ``DETECTION_NAMES``;
  ``attribute_name`` among :data:`VALID_ATTRIBUTES` of that class ('' for
  cones and barriers);
- every number finite (JSON ``NaN``/``Infinity`` included), sizes positive,
  unit quaternions, scores in [0, 1];
- and the devkit's own ``load_prediction`` accepts the file.

Expected tokens come from a dataroot (``<root>/<version>/{scene,sample}.json``
and the devkit's split lists) or from a token file (see
:func:`tokens_from_file`).
"""
import json
import math
import os.path as osp
import pickle
from typing import Dict, Iterable, List, Optional, Sequence, Set

META_KEYS = ('use_camera', 'use_lidar', 'use_radar', 'use_map',
             'use_external')
MAX_BOXES_PER_SAMPLE = 500
# Not a devkit rule: a sanity bound far above 500 boxes x 6008 test samples
# of compact JSON (~330 bytes a box), so a runaway file is caught locally.
DEFAULT_MAX_BYTES = 1536 * 2**20
_VEHICLE = ('vehicle.moving', 'vehicle.parked', 'vehicle.stopped')
_CYCLE = ('cycle.with_rider', 'cycle.without_rider')
_PEDESTRIAN = ('pedestrian.moving', 'pedestrian.standing',
               'pedestrian.sitting_lying_down')
# The devkit README's table "nuScenes detection class -> Attributes".
VALID_ATTRIBUTES: Dict[str, tuple] = dict(
    car=_VEHICLE, truck=_VEHICLE, bus=_VEHICLE, trailer=_VEHICLE,
    construction_vehicle=_VEHICLE, bicycle=_CYCLE, motorcycle=_CYCLE,
    pedestrian=_PEDESTRIAN, traffic_cone=('', ), barrier=('', ))
# Attribute rule of mmdet3d's NuScenesMetric (LiDAR boxes): above this
# speed (m/s) vehicles move and cycles have a rider.
MOVING_SPEED = 0.2
_FIELDS = ('sample_token', 'translation', 'size', 'rotation', 'velocity',
           'detection_name', 'detection_score', 'attribute_name')
_LENGTHS = dict(translation=3, size=3, rotation=4, velocity=2)


class SubmissionError(ValueError):
    """A submission file breaks a rule; the message names the rule."""


def submission_meta(modality: Optional[dict]) -> Dict[str, bool]:
    """The ``meta`` block from a config's ``modality`` dict (mmdet3d style;
    absent flags are False)."""
    modality = dict(modality or {})
    unknown = sorted(set(modality) - set(META_KEYS))
    if unknown:
        raise ValueError(f'modality has keys {unknown} that are no nuScenes '
                         f'submission meta flag ({list(META_KEYS)})')
    return {k: bool(modality.get(k, False)) for k in META_KEYS}


def attribute_from_velocity(name: str, velocity_xy: Sequence[float]) -> str:
    """The attribute mmdet3d's NuScenesMetric gives a LiDAR box of class
    ``name`` moving at ``velocity_xy`` (m/s): vehicles moving above
    :data:`MOVING_SPEED`, else parked (bus: stopped); cycles with rider when
    moving, else without; pedestrians moving or standing; '' for cones and
    barriers. A non-finite velocity counts as not moving."""
    if name not in VALID_ATTRIBUTES:
        raise ValueError(f'{name!r} is not a nuScenes detection class')
    speed = math.hypot(float(velocity_xy[0]), float(velocity_xy[1]))
    moving = speed > MOVING_SPEED  # False for NaN, as in mmdet3d
    if VALID_ATTRIBUTES[name] == _VEHICLE:
        if moving:
            return 'vehicle.moving'
        return 'vehicle.stopped' if name == 'bus' else 'vehicle.parked'
    if VALID_ATTRIBUTES[name] == _CYCLE:
        return 'cycle.with_rider' if moving else 'cycle.without_rider'
    if name == 'pedestrian':
        return 'pedestrian.moving' if moving else 'pedestrian.standing'
    return ''


def keep_top_scoring(boxes: List[dict],
                     max_boxes: int = MAX_BOXES_PER_SAMPLE) -> List[dict]:
    """The ``max_boxes`` highest-scoring boxes, by descending score (ties
    keep their order)."""
    ranked = sorted(boxes, key=lambda b: -b['detection_score'])
    return ranked[:max_boxes]


# ----------------------------------------------------------- expected tokens
def tokens_from_dataroot(dataroot: str, version: str, split: str) -> Set[str]:
    """Sample tokens of ``split`` present in ``dataroot``'s tables.

    Reads only ``<dataroot>/<version>/scene.json`` and ``sample.json``; the
    split's scene names are the devkit's (``fuller.data_prep.splits``).
    """
    from fuller.structures.nuscenes_splits import get_split_scenes
    table_dir = osp.join(dataroot, version)
    tables = {}
    for name in ('scene', 'sample'):
        path = osp.join(table_dir, f'{name}.json')
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'{path} not found: --dataroot/--version must name the '
                f'nuScenes tables of the split (or pass --tokens)')
        with open(path) as f:
            tables[name] = json.load(f)
    names = get_split_scenes(version, split)
    wanted = {s['token'] for s in tables['scene'] if s['name'] in set(names)}
    if not wanted:
        raise SubmissionError(f'{table_dir} holds no scene of the {version} '
                              f'split {split!r}')
    return {s['token'] for s in tables['sample']
            if s['scene_token'] in wanted}


def tokens_from_file(path: str) -> Set[str]:
    """Sample tokens listed in ``path``: a JSON list of tokens, a JSON
    object whose values carry ``sample_token`` (e.g. a filename -> tokens
    map such as the devkit-derived ``token_dict_mini.json``), or an mmdet3d
    info ``.pkl`` (``data_list[i]['token']``)."""
    if path.endswith('.pkl'):
        with open(path, 'rb') as f:
            infos = pickle.load(f)
        try:
            return {info['token'] for info in infos['data_list']}
        except (KeyError, TypeError) as err:
            raise ValueError(f'{path}: not an mmdet3d info file with '
                             f'data_list[].token ({err!r})') from err
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, list) and all(isinstance(t, str) for t in data):
        return set(data)
    if isinstance(data, dict) and all(
            isinstance(v, dict) and 'sample_token' in v
            for v in data.values()):
        return {v['sample_token'] for v in data.values()}
    raise ValueError(f'{path}: expected a JSON list of sample tokens or an '
                     f'object whose values hold "sample_token"')


# ---------------------------------------------------------------- validation
def _raise_on_constant(name: str):
    raise SubmissionError(f'non-finite number {name} in the file (JSON '
                          f'allows none; the server rejects it)')


def load_submission_json(path: str, max_bytes: int = DEFAULT_MAX_BYTES):
    """Parse ``path`` after the size check; NaN/Infinity are an error."""
    if not osp.isfile(path):
        raise SubmissionError(f'results file {path} does not exist')
    size = osp.getsize(path)
    if size > max_bytes:
        raise SubmissionError(f'file size {size} bytes exceeds the limit of '
                              f'{max_bytes} bytes ({max_bytes / 2**20:g} '
                              f'MiB)')
    with open(path) as f:
        try:
            return json.load(f, parse_constant=_raise_on_constant), size
        except json.JSONDecodeError as err:
            raise SubmissionError(f'not valid JSON: {err}') from err


def check_meta(meta) -> None:
    if not isinstance(meta, dict):
        raise SubmissionError('meta block missing or not an object')
    missing = [k for k in META_KEYS if k not in meta]
    extra = sorted(set(meta) - set(META_KEYS))
    if missing or extra:
        raise SubmissionError(f'meta block must hold exactly {list(META_KEYS)}'
                              f'; missing {missing}, unknown {extra}')
    bad = [k for k in META_KEYS if not isinstance(meta[k], bool)]
    if bad:
        raise SubmissionError(f'meta flags {bad} must be true/false')
    if not (meta['use_camera'] or meta['use_lidar'] or meta['use_radar']):
        raise SubmissionError('meta block declares no sensor (use_camera, '
                              'use_lidar and use_radar all false)')


def _check_numbers(where: str, box: dict) -> None:
    for key, n in _LENGTHS.items():
        value = box[key]
        if not isinstance(value, list) or len(value) != n or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool)
                for v in value):
            raise SubmissionError(f'{where}: {key} must be a list of {n} '
                                  f'numbers, got {value!r}')
        if not all(math.isfinite(v) for v in value):
            raise SubmissionError(f'{where}: non-finite {key} {value}')
    if min(box['size']) <= 0:
        raise SubmissionError(f'{where}: size {box["size"]} must be > 0')
    norm = math.sqrt(sum(v * v for v in box['rotation']))
    if abs(norm - 1.0) > 1e-3:
        raise SubmissionError(f'{where}: rotation {box["rotation"]} is not '
                              f'a unit quaternion (norm {norm:.4f})')
    score = box['detection_score']
    if not isinstance(score, (int, float)) or isinstance(score, bool) or \
            not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise SubmissionError(f'{where}: detection_score {score!r} must be '
                              f'a finite number in [0, 1]')


def check_sample_boxes(token: str, boxes, max_boxes: int) -> None:
    """Every rule on one sample's list of boxes."""
    if not isinstance(boxes, list):
        raise SubmissionError(f'sample {token}: results entry must be a '
                              f'list, got {type(boxes).__name__}')
    if len(boxes) > max_boxes:
        raise SubmissionError(f'sample {token}: {len(boxes)} boxes, more '
                              f'than the {max_boxes} allowed per sample')
    for i, box in enumerate(boxes):
        where = f'sample {token} box {i}'
        if not isinstance(box, dict):
            raise SubmissionError(f'{where}: not an object')
        missing = [k for k in _FIELDS if k not in box]
        if missing:
            raise SubmissionError(f'{where}: missing fields {missing}')
        if box['sample_token'] != token:
            raise SubmissionError(f'{where}: sample_token '
                                  f'{box["sample_token"]!r} differs from its '
                                  f'results key')
        name, attr = box['detection_name'], box['attribute_name']
        if name not in VALID_ATTRIBUTES:
            raise SubmissionError(f'{where}: detection_name {name!r} is not '
                                  f'one of {sorted(VALID_ATTRIBUTES)}')
        if attr not in VALID_ATTRIBUTES[name]:
            raise SubmissionError(
                f'{where}: attribute_name {attr!r} is not valid for class '
                f'{name!r} (valid: {list(VALID_ATTRIBUTES[name])})')
        _check_numbers(where, box)


def check_coverage(tokens: Iterable[str], expected: Set[str]) -> None:
    got = set(tokens)
    missing, extra = sorted(expected - got), sorted(got - expected)
    if missing:
        raise SubmissionError(
            f'missing sample token(s): {len(missing)} of the split\'s '
            f'{len(expected)} samples have no results entry, e.g. '
            f'{missing[:3]} (a sample without boxes needs an empty list)')
    if extra:
        raise SubmissionError(f'{len(extra)} sample token(s) are not in the '
                              f'split, e.g. {extra[:3]}')


def _devkit_load(path: str, max_boxes: int):
    """The devkit's own loader; its assertion messages become errors."""
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox
    try:
        return load_prediction(path, max_boxes, DetectionBox, verbose=False)
    except (AssertionError, KeyError, TypeError, ValueError) as err:
        raise SubmissionError(f'the devkit loader rejects the file: '
                              f'{type(err).__name__}: {err}') from err


def validate_submission(path: str, expected_tokens: Set[str], *,
                        max_boxes: int = MAX_BOXES_PER_SAMPLE,
                        max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    """Check ``path`` against every rule (module doc); raise
    :class:`SubmissionError` naming the first broken one.

    Returns:
        A summary: samples, boxes, boxes per sample (max), per-class box
        counts, file size in bytes and the meta block.
    """
    data, size = load_submission_json(path, max_bytes)
    if not isinstance(data, dict) or 'results' not in data:
        raise SubmissionError('top level must be an object with "meta" and '
                              '"results"')
    check_meta(data.get('meta'))
    results = data['results']
    if not isinstance(results, dict):
        raise SubmissionError('"results" must map sample tokens to lists')
    for token, boxes in results.items():
        check_sample_boxes(token, boxes, max_boxes)
    check_coverage(results, set(expected_tokens))
    pred_boxes, _ = _devkit_load(path, max_boxes)
    if set(pred_boxes.sample_tokens) != set(results):
        raise SubmissionError('the devkit loader read other sample tokens '
                              'than the file holds')
    per_class: Dict[str, int] = {}
    for boxes in results.values():
        for box in boxes:
            name = box['detection_name']
            per_class[name] = per_class.get(name, 0) + 1
    return dict(samples=len(results),
                boxes=sum(per_class.values()),
                max_boxes_per_sample=max((len(b) for b in results.values()),
                                         default=0),
                empty_samples=sum(1 for b in results.values() if not b),
                boxes_per_class=dict(sorted(per_class.items())),
                file_bytes=size,
                meta=data['meta'])
