"""Aggregation of an ablation study on hand-made metrics: seed statistics,
paired differences with their 95 % t-intervals, the verdict rule and the
multi-task penalty (values computed by hand in the comments; the t quantiles
are the printed table values t(0.975, 2) = 4.302653, t(0.975, 4) = 2.776445).
"""
import json
import math

import pytest

from fuller.evaluation.ablation import (DET_PREFIX, paired_interval,
                                        penalty, penalty_change,
                                        penalty_trend, render_markdown,
                                        render_report, summarize, verdict,
                                        versus, versus_front)

MAP = DET_PREFIX + 'mAP'
MIOU = 'map/mIoU@0.5'
T2, T4 = 4.302653, 2.776445


def _runs():
    return {
        # naive mAP 0.10, 0.20, 0.30: mean 0.20, std 0.10
        'naive': {0: {MAP: 0.10, MIOU: 0.50}, 1: {MAP: 0.20, MIOU: 0.52},
                  2: {MAP: 0.30, MIOU: 0.54}},
        # a mAP 0.15, 0.30, 0.33: diffs +0.05, +0.10, +0.03 -> mean 0.06
        # std(a) = sqrt(((-.11)^2 + .04^2 + .07^2) / 2) = sqrt(0.0093)
        'a': {0: {MAP: 0.15, MIOU: 0.80}, 1: {MAP: 0.30, MIOU: 0.82},
              2: {MAP: 0.33, MIOU: 0.84}},
        # det-only: no map keys at all; seed 2 missing
        'det': {0: {MAP: 0.0}, 1: {MAP: 0.12}},
    }


def test_interval_better():
    # diffs 0.10, 0.12, 0.14: mean 0.12, sd 0.02, se 0.02 / sqrt(3)
    c = paired_interval([0.10, 0.12, 0.14])
    half = T2 * 0.02 / math.sqrt(3)  # 0.049682
    assert c['mean'] == pytest.approx(0.12)
    assert c['sd'] == pytest.approx(0.02)
    assert c['half'] == pytest.approx(half, rel=1e-5)
    assert (c['low'], c['high']) == pytest.approx((0.12 - half, 0.12 + half),
                                                  rel=1e-5)
    assert verdict(c['low'], c['high']) == 'better'


def test_interval_worse():
    c = paired_interval([-0.10, -0.12, -0.14])
    assert c['high'] == pytest.approx(-0.12 + T2 * 0.02 / math.sqrt(3),
                                      rel=1e-5)
    assert verdict(c['low'], c['high']) == 'worse'


def test_interval_unresolved():
    # diffs 0.05, -0.03, 0.10: mean 0.04; squares of deviations
    # 0.0001 + 0.0049 + 0.0036 = 0.0086, sd = sqrt(0.0043) = 0.065574
    c = paired_interval([0.05, -0.03, 0.10])
    half = T2 * math.sqrt(0.0043) / math.sqrt(3)  # 0.16289
    assert c['low'] == pytest.approx(0.04 - half, rel=1e-5)
    assert c['high'] == pytest.approx(0.04 + half, rel=1e-5)
    assert verdict(c['low'], c['high'], margin=0.01) == 'unresolved'


def test_interval_equivalent_within_margin():
    # diffs 0.001, -0.001, 0.002, 0, -0.002: mean 0, sd sqrt(1e-5 / 4)
    c = paired_interval([0.001, -0.001, 0.002, 0.0, -0.002])
    half = T4 * math.sqrt(2.5e-6) / math.sqrt(5)  # 0.0019635
    assert c['half'] == pytest.approx(half, rel=1e-5)
    assert verdict(c['low'], c['high'], margin=0.01) == 'equivalent'
    # the same interval is unresolved against a margin it does not fit in
    assert verdict(c['low'], c['high'], margin=0.001) == 'unresolved'


def test_verdict_needs_two_pairs():
    c = paired_interval([0.5])
    assert math.isnan(c['low'])
    assert verdict(c['low'], c['high']) == 'unresolved'


def test_seed_statistics_and_paired_differences():
    s = summarize(_runs(), 'naive')
    naive = s['naive']['mAP']
    assert naive['mean'] == pytest.approx(0.20)
    assert naive['std'] == pytest.approx(0.10)
    assert 'paired' not in naive
    a = s['a']['mAP']
    assert a['mean'] == pytest.approx(0.26)
    assert a['std'] == pytest.approx(math.sqrt(0.0093))
    p = a['paired']
    assert p['diffs'] == pytest.approx([0.05, 0.10, 0.03])
    assert p['mean'] == pytest.approx(0.06)
    # sd of (0.05, 0.10, 0.03) = sqrt((0.01^2 + 0.04^2 + 0.03^2) / 2)
    sd = math.sqrt(0.0026 / 2)
    assert p['sd'] == pytest.approx(sd)
    assert p['low'] == pytest.approx(0.06 - T2 * sd / math.sqrt(3), rel=1e-5)
    assert p['verdict'] == 'unresolved'  # low = -0.0296 < 0 < high
    # mIoU: +0.30 each seed: sd 0, interval [0.30, 0.30] -> better
    m = s['a']['mIoU@0.5']['paired']
    assert m['mean'] == pytest.approx(0.30)
    assert m['low'] == pytest.approx(0.30)
    assert m['verdict'] == 'better'


def test_single_task_and_missing_seeds():
    s = summarize(_runs(), 'naive')
    assert 'mIoU@0.5' not in s['det']
    det = s['det']['mAP']
    assert det['seeds'] == [0, 1] and det['n'] == 2
    # paired on seeds 0, 1 only: -0.10, -0.08 (mean -0.09, sd 0.01414)
    p = det['paired']
    assert p['diffs'] == pytest.approx([-0.10, -0.08])
    assert p['seeds'] == [0, 1]
    # t(0.975, 1) = 12.706205: half = 12.706205 * 0.01414 / sqrt(2) = 0.12706
    assert p['half'] == pytest.approx(0.127062, rel=1e-4)
    assert p['verdict'] == 'unresolved'


def test_penalty_is_multitask_minus_single_task_per_task():
    runs = {
        'det-only': {0: {MAP: 0.30}, 1: {MAP: 0.32}, 2: {MAP: 0.34}},
        'seg-only': {0: {MIOU: 0.60}, 1: {MIOU: 0.61}, 2: {MIOU: 0.62}},
        # mAP -0.10 -0.12 -0.14 (worse), mIoU +0.00 +0.00 +0.00 (sd 0)
        'naive': {0: {MAP: 0.20, MIOU: 0.60}, 1: {MAP: 0.20, MIOU: 0.61},
                  2: {MAP: 0.20, MIOU: 0.62}},
    }
    table = penalty(runs, 'det-only', 'seg-only', ['naive', 'absent'])
    assert set(table) == {'naive'}
    det = table['naive']['mAP']
    assert det['reference'] == 'det-only'
    assert det['diffs'] == pytest.approx([-0.10, -0.12, -0.14])
    assert det['verdict'] == 'worse'
    seg = table['naive']['mIoU@0.5']
    assert seg['reference'] == 'seg-only'
    assert seg['diffs'] == pytest.approx([0.0, 0.0, 0.0])
    assert seg['verdict'] == 'equivalent'  # interval [0, 0] inside ±0.01


def test_versus_compares_every_other_variant_with_one_reference():
    runs = _runs()
    table = versus(runs, 'naive', ['naive', 'a', 'absent'])
    assert set(table) == {'a'}                      # not itself, not absent
    assert set(table['a']) == {'mAP', 'mIoU@0.5'}   # the metrics both report
    det = table['a']['mAP']
    assert det['reference'] == 'naive'
    # diffs +0.05, +0.10, +0.03: mean 0.06, sd sqrt(0.0013), half T2 sd/sqrt(3)
    assert det['diffs'] == pytest.approx([0.05, 0.10, 0.03])
    half = T2 * math.sqrt(0.0013) / math.sqrt(3)
    assert (det['low'], det['high']) == pytest.approx((0.06 - half, 0.06 + half))
    assert table['a']['mIoU@0.5']['diffs'] == pytest.approx([0.30] * 3)
    assert versus(runs, 'no-such-sum', ['a']) == {}


def test_versus_front_is_each_calibration_minus_each_front_point():
    runs = _runs()
    runs['seg3'] = {s: {MAP: m[MAP] - 0.01, MIOU: m[MIOU] + 0.1}
                    for s, m in runs['naive'].items()}
    table = versus_front(runs, ['a', 'absent'], ['naive', 'seg3', 'absent'])
    assert set(table) == {'a'} and set(table['a']) == {'naive', 'seg3'}
    # a - seg3 = (a - naive) + 0.01 on mAP, (a - naive) - 0.1 on mIoU@0.5
    assert table['a']['seg3']['mAP']['diffs'] == pytest.approx([0.06, 0.11, 0.04])
    assert table['a']['seg3']['mIoU@0.5']['diffs'] == pytest.approx([0.20] * 3)
    assert table['a']['seg3']['mAP']['reference'] == 'seg3'


def _two_settings():
    """Width 64 and width 128 of a hand-made study, three seeds each."""
    runs = {
        # width 64: det-only mAP .30 .32 .34, seg-only mIoU .60 .61 .62
        'det-only': {0: {MAP: 0.30}, 1: {MAP: 0.32}, 2: {MAP: 0.34}},
        'seg-only': {0: {MIOU: 0.60}, 1: {MIOU: 0.61}, 2: {MIOU: 0.62}},
        # penalties mAP -.10 -.12 -.14, mIoU -.20 -.21 -.22
        'naive': {0: {MAP: 0.20, MIOU: 0.40}, 1: {MAP: 0.20, MIOU: 0.40},
                  2: {MAP: 0.20, MIOU: 0.40}},
        # width 128: det-only mAP .40 .40 .40, seg-only mIoU .70 .70 .70
        'det-only-w128': {s: {MAP: 0.40} for s in range(3)},
        'seg-only-w128': {s: {MIOU: 0.70} for s in range(3)},
        # penalties mAP -.05 -.06 -.07; mIoU -.20 -.21 (seed 2 missing)
        'naive-w128': {0: {MAP: 0.35, MIOU: 0.50}, 1: {MAP: 0.34, MIOU: 0.49},
                       2: {MAP: 0.33}},
    }
    settings = {
        'w64': dict(det_only='det-only', seg_only='seg-only',
                    roles={'naive': 'naive', 'fuller': 'absent'}),
        'w128': dict(det_only='det-only-w128', seg_only='seg-only-w128',
                     roles={'naive': 'naive-w128', 'only-here': 'naive-w128'}),
    }
    return runs, settings


def test_penalty_change_is_the_difference_of_penalties_per_seed():
    runs, settings = _two_settings()
    table = penalty_change(runs, settings['w64'], settings['w128'])
    assert set(table) == {'naive-w128'}     # 'only-here' has no base role
    det = table['naive-w128']['mAP']
    assert det['reference'] == 'naive'
    # (-.05 - -.10, -.06 - -.12, -.07 - -.14) = (+.05, +.06, +.07): mean .06,
    # sd .01, half T2 * .01 / sqrt(3); the penalty shrank
    assert det['diffs'] == pytest.approx([0.05, 0.06, 0.07])
    half = T2 * 0.01 / math.sqrt(3)
    assert (det['low'], det['high']) == pytest.approx((0.06 - half, 0.06 + half))
    assert det['verdict'] == 'better'
    # mIoU: seeds 0, 1 only: (-.20 - -.20, -.21 - -.21) = (0, 0)
    seg = table['naive-w128']['mIoU@0.5']
    assert seg['seeds'] == [0, 1]
    assert seg['diffs'] == pytest.approx([0.0, 0.0])
    assert seg['verdict'] == 'equivalent'
    # the trend runs from the first setting to every other one
    assert penalty_trend(settings, runs) == {'w128': table}
    assert penalty_trend({}, runs) == {}


def test_markdown_lists_every_variant_and_difference():
    runs = _runs()
    text = render_markdown(summarize(runs, 'naive'), 'naive')
    assert '| a | 3 | 0.260 ± 0.096 |' in text
    assert ('| a | mIoU@0.5 | +0.300 | [+0.300, +0.300] | +0.300, +0.300, '
            '+0.300 | better |') in text
    assert '| det | 2 | 0.060 ± 0.085 | - |' in text


def test_report_renders_from_json_round_trip():
    """The report is computed from the per-seed metrics of the JSON, with
    string seed keys as JSON stores them."""
    data = dict(study='t', command='c', commits=['abc'], seeds=[0, 1, 2],
                baseline='naive', runs=_runs(),
                penalty_settings=dict(s=dict(det_only='det', seg_only='naive',
                                             multitask=['a'])))
    data = json.loads(json.dumps(data))  # seeds become strings
    text = render_report(data)
    assert 'Commit(s) of the runs: abc' in text
    assert '| a | 3 | 0.260 ± 0.096 |' in text
    assert '## Multi-task penalty: `s`' in text
    # a - det on seeds 0, 1: +0.15, +0.18; a - naive mIoU: +0.30 each
    assert '| a | +0.165 [' in text
    assert '+0.300 [+0.300, +0.300] (n=3) better' in text
    assert '![Pareto](results_pareto.png)' in text


def test_report_renders_the_penalty_change_between_settings():
    runs, settings = _two_settings()
    data = dict(study='t', command='c', commits=['abc'], seeds=[0, 1, 2],
                baseline='naive', runs=runs, penalty_settings={
                    name: dict(spec, multitask=list(spec['roles'].values()))
                    for name, spec in settings.items()})
    text = render_report(json.loads(json.dumps(data)))
    assert '## Change of the penalty from `w64` to `w128`' in text
    half = T2 * 0.01 / math.sqrt(3)
    assert (f'| naive-w128 - naive | +0.060 [{0.06 - half:+.3f}, '
            f'{0.06 + half:+.3f}] (n=3) better |') in text


def test_unknown_baseline():
    with pytest.raises(KeyError, match='baseline'):
        summarize(_runs(), 'missing')


def test_penalty_chart_draws_only_cells_with_an_interval(tmp_path, monkeypatch):
    """Per task one point per (setting, variant) with two or more paired
    seeds, at the mean paired difference with the interval's half-width:
    naive's mAP diffs -0.10, -0.12, -0.14 -> mean -0.12, half T2 * 0.02 /
    sqrt(3); 'one' has a single seed and is left out."""
    from matplotlib.axes import Axes

    from fuller.evaluation.study_charts import penalty_chart
    drawn = []
    monkeypatch.setattr(Axes, 'errorbar', lambda self, x, y, yerr=None, **kw:
                        drawn.append((kw.get('label'), list(y), list(yerr))))
    runs = {
        'det-only': {0: {MAP: 0.30}, 1: {MAP: 0.32}, 2: {MAP: 0.34}},
        'seg-only': {0: {MIOU: 0.60}, 1: {MIOU: 0.61}, 2: {MIOU: 0.62}},
        'naive': {0: {MAP: 0.20, MIOU: 0.60}, 1: {MAP: 0.20, MIOU: 0.61},
                  2: {MAP: 0.20, MIOU: 0.62}},
        'one': {0: {MAP: 0.25, MIOU: 0.40}},
    }
    settings = {'w64': dict(det_only='det-only', seg_only='seg-only',
                            multitask=['naive', 'one'])}
    penalty_chart(runs, settings, str(tmp_path / 'penalty.png'))
    assert (tmp_path / 'penalty.png').is_file()
    assert [d[0] for d in drawn] == ['naive', 'naive']   # mAP, mIoU@0.5
    (_, map_y, map_h), (_, miou_y, miou_h) = drawn
    assert map_y == pytest.approx([-0.12])
    assert map_h == pytest.approx([T2 * 0.02 / math.sqrt(3)], rel=1e-5)
    assert miou_y == pytest.approx([0.0]) and miou_h == pytest.approx([0.0])


def test_charts_give_a_role_one_colour_in_every_setting(tmp_path, monkeypatch):
    """``naive`` and ``naive-w128`` (role ``naive``) share a colour, in the
    Pareto panels and in the penalty chart; another role gets another."""
    from matplotlib.axes import Axes

    from fuller.evaluation.study_charts import pareto_chart, penalty_chart
    drawn = []
    monkeypatch.setattr(Axes, 'errorbar', lambda self, x, y, *a, **kw:
                        drawn.append((kw['label'], kw['color'])))
    runs, settings = _two_settings()
    runs['seg30'], runs['seg30-w128'] = runs['naive'], runs['naive-w128']
    settings['w64']['multitask'] = ['naive', 'seg30']
    settings['w128']['multitask'] = ['seg30-w128', 'naive-w128']  # another order
    pareto_chart(runs, settings, str(tmp_path / 'pareto.png'))
    colour = dict(drawn)
    assert colour['naive (n=3)'] == colour['naive-w128 (n=3)']
    assert colour['seg30 (n=3)'] == colour['seg30-w128 (n=3)'] != colour['naive (n=3)']
    drawn.clear()
    penalty_chart(runs, settings, str(tmp_path / 'penalty.png'))
    assert {c for label, c in drawn if label == 'naive'} == {colour['naive (n=3)']}
