"""tools/analysis/optimizer_probe.py: the comparison and the table on
hand-made parameter changes (the probe itself trains the tiny model for
minutes and is run by hand, see its docstring)."""

import pytest
import torch

from fuller.testing import load_script
from tests.test_calibration.test_calibration_hook import REPO


def load_probe():
    return load_script(REPO / 'tools' / 'analysis' / 'optimizer_probe.py', 'optimizer_probe')


def fake_run(deltas):
    groups = {g: torch.tensor(v, dtype=torch.float64)
              for g, v in deltas.items()}
    return dict(delta=groups, norm_total={g: float(d.norm())
                                          for g, d in groups.items()},
                mean_step={g: 0.5 for g in groups}, seconds=1.0,
                mean_factors=dict(alpha_det=None, scale_camera=2.0),
                median_grad_norm=40.0, clipped_steps=2)


def test_compare_against_references_by_hand():
    probe = load_probe()
    off = dict(camera=[3.0, 4.0], lidar=[1.0, 0.0])
    runs = dict(
        off=fake_run(off),
        modality=fake_run(dict(camera=[6.0, 8.0], lidar=[1.0, 1.0])),
        task=fake_run(dict(camera=[3.0, 4.0], lidar=[0.0, 0.0])),
        task_summag=fake_run(dict(camera=[3.0, 4.0], lidar=[0.0, 2.0])))
    out = probe.compare(runs)
    assert 'off' not in out
    cam = out['modality']['groups']['camera']
    assert cam['rel_change'] == pytest.approx(1.0)  # |(3,4)| / |(3,4)|
    assert cam['step_ratio'] == pytest.approx(2.0)
    lidar = out['modality']['groups']['lidar']
    assert lidar['rel_change'] == pytest.approx(1.0)  # |(0,1)| / |(1,0)|
    assert lidar['step_ratio'] == pytest.approx(2 ** 0.5)
    # task_summag is compared with task, not with off
    assert out['task_summag']['reference'] == 'task'
    assert out['task_summag']['groups']['camera']['rel_change'] == 0.0

    probe.GROUP_PREFIXES = dict(camera=(), lidar=())  # the table's columns
    report = dict(steps=3, clip_max_norm=35.0, results=dict(adamw=dict(
        comparison={'modality': out['modality']},
        runs={k: {n: r[n] for n in ('norm_total', 'mean_step',
                                    'mean_factors', 'median_grad_norm',
                                    'clipped_steps', 'seconds')}
              for k, r in runs.items()})))
    text = probe.markdown(report)
    assert '| adamw | modality [off] | 100.0 % (x2.00) | 100.0 % (x1.41) |' \
        in text
    assert '| adamw | off | 0.5 | 0.5 | - | 2 | 40 | 2/3 |' in text
    assert 'after 3 steps (x |dW| / |dW_ref|); gradient clipping at ' \
        'max_norm 35.' in text


def test_unknown_variant_is_named():
    probe = load_probe()
    with pytest.raises(ValueError, match='modality_steps'):
        probe.probe(variants=['modality_steps'])
