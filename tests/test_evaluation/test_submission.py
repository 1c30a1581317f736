"""The submission rules and tools/validate_submission.py, checked on a real
nuScenes submission (../shared/nuscenes-real/results) and broken copies of
it, against the devkit's own loader and README rules."""
import copy
import json

import pytest

from fuller.evaluation import submission as sub
from fuller.testing import REPO_ROOT, load_script

# nuScenes v1.0-mini: the mini_val scenes were recorded in these logs, one
# scene per log (scene-0103: Boston, scene-0916: Singapore), 40 + 41 samples.
MINI_VAL_LOGS = ('n008-2018-08-01-15-16-36-0400',
                 'n015-2018-10-08-15-36-50+0800')


def _tool():
    return load_script(REPO_ROOT / 'tools' / 'validate_submission.py', 'validate_submission')


@pytest.fixture(scope='module')
def real(real_nuscenes_root, tmp_path_factory):
    """(results path, its JSON, a mini_val token file)."""
    results_dir = real_nuscenes_root / 'results'
    token_dict = json.loads((results_dir / 'token_dict_mini.json').read_text())
    mini_val = sorted(v['sample_token'] for k, v in token_dict.items()
                      if k.split('__')[0] in MINI_VAL_LOGS)
    tokens = tmp_path_factory.mktemp('tokens') / 'mini_val_tokens.json'
    tokens.write_text(json.dumps(mini_val))
    path = results_dir / 'mini_results_nusc.json'
    return path, json.loads(path.read_text()), tokens


def _broken(tmp_path, data, name='broken.json', nan=False):
    path = tmp_path / name
    path.write_text(json.dumps(data, allow_nan=nan))
    return path


def test_mini_val_scenes_are_the_devkit_ones(real):
    from fuller.data_prep.splits import get_split_scenes
    assert get_split_scenes('v1.0-mini', 'val') == ['scene-0103', 'scene-0916']
    _, _, tokens = real
    assert len(json.loads(tokens.read_text())) == 81


def test_real_submission_passes(real, capsys):
    path, data, tokens = real
    assert _tool().main([str(path), '--tokens', str(tokens)]) == 0
    out = capsys.readouterr().out
    assert 'VALID' in out
    summary = json.loads(out[out.index('{'):])
    assert summary['samples'] == 81 and summary['boxes'] == 793
    assert summary['meta'] == data['meta']
    assert summary['boxes_per_class']['car'] == 734


@pytest.mark.parametrize('breakage,expected', [
    ('missing_token', 'missing sample token'),
    ('501_boxes', '501 boxes, more than the 500 allowed'),
    ('bad_attribute', "attribute_name 'cycle.with_rider' is not valid for "
     "class 'car'"),
    ('nan', 'non-finite number NaN'),
])
def test_broken_copies_fail_naming_the_problem(real, tmp_path, capsys,
                                               breakage, expected):
    path, data, tokens = real
    data = copy.deepcopy(data)
    token = sorted(data['results'])[0]
    boxes = data['results'][token]
    if breakage == 'missing_token':
        del data['results'][token]
    elif breakage == '501_boxes':
        data['results'][token] = [dict(boxes[0]) for _ in range(501)]
    elif breakage == 'bad_attribute':
        car = next(b for b in boxes if b['detection_name'] == 'car')
        car['attribute_name'] = 'cycle.with_rider'
    elif breakage == 'nan':
        boxes[0]['velocity'][0] = float('nan')
    broken = _broken(tmp_path, data, nan=breakage == 'nan')
    assert _tool().main([str(broken), '--tokens', str(tokens)]) == 1
    err = capsys.readouterr().err
    assert 'INVALID' in err and expected in err, err


@pytest.mark.parametrize('field,value,expected', [
    ('velocity', [float('nan'), 0.0], 'non-finite number NaN'),
    ('attribute_name', 'cycle.with_rider', 'not valid for class'),
])
def test_devkit_loader_alone_misses_what_the_validator_catches(
        real, tmp_path, field, value, expected):
    """The devkit loader accepts a NaN velocity and a car 'with rider':
    the validator's own checks are needed on top of it."""
    from nuscenes.eval.common.loaders import load_prediction
    from nuscenes.eval.detection.data_classes import DetectionBox
    path, data, tokens = real
    data = copy.deepcopy(data)
    box = data['results'][sorted(data['results'])[0]][0]
    assert box['detection_name'] == 'car'
    box[field] = value
    broken = _broken(tmp_path, data, nan=True)
    boxes, _ = load_prediction(str(broken), 500, DetectionBox)
    assert len(boxes.sample_tokens) == 81
    with pytest.raises(sub.SubmissionError, match=expected):
        sub.validate_submission(str(broken), set(json.loads(
            tokens.read_text())))


@pytest.mark.parametrize('edit,expected', [
    (lambda d: d['meta'].pop('use_map'), "missing ['use_map']"),
    (lambda d: d['meta'].update(use_lidar='yes'), "['use_lidar'] must be"),
    (lambda d: d['results'].update(
        {'0' * 32: []}), '1 sample token(s) are not in the split'),
    (lambda d: d['results'][sorted(d['results'])[1]][0].update(
        detection_name='van'), "detection_name 'van'"),
    (lambda d: d['results'][sorted(d['results'])[1]][0].update(
        detection_score=1.5), 'detection_score 1.5'),
    (lambda d: d['results'][sorted(d['results'])[1]][0].update(
        rotation=[2.0, 0.0, 0.0, 0.0]), 'not a unit quaternion'),
    (lambda d: d['results'][sorted(d['results'])[1]][0].update(
        sample_token='f' * 32), 'differs from its results key'),
])
def test_other_rules(real, tmp_path, edit, expected):
    path, data, tokens = real
    data = copy.deepcopy(data)
    edit(data)
    with pytest.raises(sub.SubmissionError) as err:
        sub.validate_submission(str(_broken(tmp_path, data)),
                                set(json.loads(tokens.read_text())))
    assert expected in str(err.value)


def test_coverage_against_all_mini_tokens_fails(real, real_nuscenes_root,
                                                capsys):
    path, _, _ = real
    all_mini = real_nuscenes_root / 'results' / 'token_dict_mini.json'
    assert _tool().main([str(path), '--tokens', str(all_mini)]) == 1
    assert '323 of the split\'s 404 samples have no results entry' in \
        capsys.readouterr().err


def test_size_limit(real, capsys):
    path, _, tokens = real
    assert _tool().main([str(path), '--tokens', str(tokens),
                         '--max-size-mib', '0.1']) == 1
    assert 'exceeds the limit of' in capsys.readouterr().err


def test_bad_arguments_exit_2(real, tmp_path, capsys):
    path, _, tokens = real
    with pytest.raises(SystemExit) as exc:
        _tool().main([str(path)])
    assert exc.value.code == 2
    assert _tool().main([str(path), '--dataroot', str(tmp_path), '--version',
                         'v1.0-mini', '--split', 'val']) == 2
    assert 'scene.json not found' in capsys.readouterr().err


def test_attribute_rule_follows_the_devkit_table():
    """Every attribute the rule gives is in the devkit README table of its
    class (``DETECTION_NAMES``, ``ATTRIBUTE_NAMES`` from the devkit)."""
    from nuscenes.eval.detection.constants import (ATTRIBUTE_NAMES,
                                                   DETECTION_NAMES)
    assert set(sub.VALID_ATTRIBUTES) == set(DETECTION_NAMES)
    for name in DETECTION_NAMES:
        for velocity in ([0.0, 0.0], [0.1, 0.1], [3.0, -4.0],
                         [float('nan'), 0.0]):
            attr = sub.attribute_from_velocity(name, velocity)
            assert attr in sub.VALID_ATTRIBUTES[name]
            assert attr == '' or attr in ATTRIBUTE_NAMES
    expected = {('car', 5.0): 'vehicle.moving', ('car', 0.1): 'vehicle.parked',
                ('bus', 0.0): 'vehicle.stopped', ('bus', 1.0): 'vehicle.moving',
                ('bicycle', 1.0): 'cycle.with_rider',
                ('motorcycle', 0.0): 'cycle.without_rider',
                ('pedestrian', 1.0): 'pedestrian.moving',
                ('pedestrian', 0.0): 'pedestrian.standing',
                ('traffic_cone', 9.0): '', ('barrier', 0.0): ''}
    for (name, speed), attr in expected.items():
        assert sub.attribute_from_velocity(name, [0.0, speed]) == attr


def test_meta_and_top_scoring():
    assert sub.submission_meta(dict(use_lidar=True, use_camera=True)) == dict(
        use_camera=True, use_lidar=True, use_radar=False, use_map=False,
        use_external=False)
    with pytest.raises(ValueError, match='use_lidr'):
        sub.submission_meta(dict(use_lidr=True))
    boxes = [dict(detection_score=s) for s in (0.1, 0.9, 0.5, 0.9, 0.3)]
    top = sub.keep_top_scoring(boxes, 3)
    assert [b['detection_score'] for b in top] == [0.9, 0.9, 0.5]
    assert top[0] is boxes[1] and top[1] is boxes[3]
