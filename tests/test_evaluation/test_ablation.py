"""Aggregation of an ablation study on hand-made metrics (values computed by
hand in the comments)."""
import math

import pytest

from fuller.evaluation.ablation import (DET_PREFIX, render_markdown,
                                        summarize, verdict)

MAP = DET_PREFIX + 'mAP'
MIOU = 'map/mIoU@0.5'


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
    # spread = max(0.0964, 0.10) = 0.10 > 0.06: no difference
    assert p['spread'] == pytest.approx(0.10)
    assert p['verdict'] == 'no difference'
    # mIoU: +0.30 each seed, both spreads 0.02 -> better
    m = s['a']['mIoU@0.5']['paired']
    assert m['mean'] == pytest.approx(0.30)
    assert m['spread'] == pytest.approx(0.02)
    assert m['verdict'] == 'better'


def test_single_task_and_missing_seeds():
    s = summarize(_runs(), 'naive')
    assert 'mIoU@0.5' not in s['det']
    det = s['det']['mAP']
    assert det['seeds'] == [0, 1] and det['n'] == 2
    # paired on seeds 0, 1 only: -0.10, -0.08 (mean -0.09);
    # spread max(std(0, 0.12) = 0.0849, 0.10) = 0.10
    assert det['paired']['diffs'] == pytest.approx([-0.10, -0.08])
    assert det['paired']['spread'] == pytest.approx(0.10)
    assert det['paired']['verdict'] == 'no difference'


def test_verdict_rule():
    assert verdict(0.2, 0.1, 3) == 'better'
    assert verdict(-0.2, 0.1, 3) == 'worse'
    assert verdict(0.05, 0.1, 3) == 'no difference'
    assert verdict(0.5, 0.1, 1) == 'no difference'  # no spread from 1 seed
    assert verdict(0.5, float('nan'), 3) == 'no difference'


def test_markdown_lists_every_variant_and_difference():
    runs = _runs()
    text = render_markdown(summarize(runs, 'naive'), 'naive')
    assert '| a | 3 | 0.260 ± 0.096 |' in text
    assert '| a | mIoU@0.5 | +0.300 | +0.300, +0.300, +0.300 | 0.020 | better |' \
        in text
    assert '| det | 2 | 0.060 ± 0.085 | - |' in text


def test_unknown_baseline():
    with pytest.raises(KeyError, match='baseline'):
        summarize(_runs(), 'missing')
