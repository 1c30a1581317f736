"""Aggregation of an ablation study: variants x seeds -> mean, seed spread and
paired differences to a baseline variant.

Input: ``runs[variant][seed] = metrics`` where ``metrics`` is the flat dict
``tools/test.py --out-metrics`` writes (devkit detection keys under
``NuScenes metric/pred_instances_3d_NuScenes/``, map keys under ``map/``).
A single-task variant simply lacks the other task's keys.

Definitions (each number below is over the seeds a variant has finished):

* mean, and ``std``: the sample standard deviation (ddof=1) over seeds: the
  *seed spread* of one setting (same data, schedule and budget; only the
  seed, i.e. initialisation and data order, changes);
* paired difference to the baseline: ``variant[s] - baseline[s]`` for every
  seed ``s`` both have (same seed = same initialisation and data order), its
  mean and its standard deviation;
* ``spread`` of a comparison: the larger seed spread of the two settings;
* verdict: 'better' if the mean paired difference exceeds ``spread``,
  'worse' if it is below ``-spread``, otherwise 'no difference' (also when
  fewer than two paired seeds exist, because no spread can be measured).
"""
import math
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from fuller.structures.nuscenes_world import MAP_CLASSES

DET_PREFIX = 'NuScenes metric/pred_instances_3d_NuScenes/'
# (label, key) of the headline metrics, then per-class IoU (best threshold).
HEADLINE = (('mAP', DET_PREFIX + 'mAP'), ('NDS', DET_PREFIX + 'NDS'),
            ('mIoU@0.5', 'map/mIoU@0.5'), ('mIoU@max', 'map/mIoU@max'))
PER_CLASS = tuple((f'IoU@max {c}', f'map/{c}/IoU@max') for c in MAP_CLASSES)
METRICS = HEADLINE + PER_CLASS

Runs = Mapping[str, Mapping[int, Mapping[str, float]]]


def _stats(values: Sequence[float]) -> Dict:
    arr = np.asarray(values, dtype=np.float64)
    n = int(arr.size)
    return dict(n=n, mean=float(arr.mean()) if n else math.nan,
                std=float(arr.std(ddof=1)) if n > 1 else math.nan,
                values=[float(v) for v in arr])


def verdict(mean_diff: float, spread: float, n_pairs: int) -> str:
    """'better' / 'worse' / 'no difference' (see the module docstring)."""
    if n_pairs < 2 or not math.isfinite(spread) or \
            not math.isfinite(mean_diff):
        return 'no difference'
    if mean_diff > spread:
        return 'better'
    if mean_diff < -spread:
        return 'worse'
    return 'no difference'


def summarize(runs: Runs, baseline: str,
              metrics: Sequence = METRICS) -> Dict:
    """Per variant and metric: seed statistics and the paired comparison
    with ``baseline``. Metrics a variant does not report are left out."""
    if baseline not in runs:
        raise KeyError(f'baseline variant {baseline!r} has no runs; '
                       f'variants: {sorted(runs)}')
    out: Dict = {}
    for variant, by_seed in runs.items():
        out[variant] = {}
        for label, key in metrics:
            seeds = sorted(s for s, m in by_seed.items() if key in m)
            if not seeds:
                continue
            entry = _stats([by_seed[s][key] for s in seeds])
            entry['seeds'] = seeds
            base = runs[baseline]
            paired = [s for s in seeds if key in base.get(s, {})]
            if variant != baseline and paired:
                diffs = [by_seed[s][key] - base[s][key] for s in paired]
                d = _stats(diffs)
                base_std = _stats([base[s][key] for s in sorted(base)
                                   if key in base[s]])['std']
                spread = max(entry['std'], base_std) if \
                    math.isfinite(entry['std']) and math.isfinite(base_std) \
                    else math.nan
                entry['paired'] = dict(
                    seeds=paired, diffs=d['values'], mean=d['mean'],
                    std=d['std'], spread=spread,
                    verdict=verdict(d['mean'], spread, len(paired)))
            out[variant][label] = entry
    return out


def _fmt(x: Optional[float], digits: int = 3) -> str:
    return '-' if x is None or not math.isfinite(x) else f'{x:.{digits}f}'


def render_markdown(summary: Dict, baseline: str,
                    metrics: Sequence = METRICS) -> str:
    """Two tables: mean ± seed spread per variant, and paired differences."""
    variants = list(summary)
    labels = [label for label, _ in metrics
              if any(label in summary[v] for v in variants)]
    lines = ['| variant | seeds | ' + ' | '.join(labels) + ' |',
             '| --- | ---: |' + ' ---: |' * len(labels)]
    for v in variants:
        n = max((e['n'] for e in summary[v].values()), default=0)
        cells = []
        for label in labels:
            e = summary[v].get(label)
            cells.append('-' if e is None else
                         f"{_fmt(e['mean'])} ± {_fmt(e['std'])}")
        lines.append(f'| {v} | {n} | ' + ' | '.join(cells) + ' |')
    lines += ['', f'Paired difference to `{baseline}` per seed (same seed = '
              'same initialisation and data order): mean [per-seed '
              'differences], spread = larger seed std of the two settings, '
              'verdict (a difference inside the spread is "no difference").',
              '', '| variant | metric | mean diff | per-seed diffs | spread | '
              'verdict |', '| --- | --- | ---: | --- | ---: | --- |']
    for v in variants:
        for label in labels:
            p = summary[v].get(label, {}).get('paired')
            if p is None:
                continue
            per_seed = ', '.join(f'{d:+.3f}' for d in p['diffs'])
            lines.append(f"| {v} | {label} | {p['mean']:+.3f} | {per_seed} | "
                         f"{_fmt(p['spread'])} | {p['verdict']} |")
    return '\n'.join(lines) + '\n'


def plot(summary: Dict, path: str, metrics: Sequence = METRICS) -> None:
    """Bar chart, mean with ±1 seed std error bars and the seeds as dots:
    one panel per headline metric and one for per-class IoU@max."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from fuller.utils.io import atomic_open

    variants = list(summary)
    headline = [label for label, _ in metrics if label in dict(HEADLINE)]
    fig, axes = plt.subplots(1, len(headline) + 1,
                             figsize=(4 * len(headline) + 8, 4.5))
    x = np.arange(len(variants))
    for ax, label in zip(axes, headline):
        means = [summary[v].get(label, {}).get('mean', math.nan)
                 for v in variants]
        stds = [summary[v].get(label, {}).get('std', math.nan)
                for v in variants]
        ax.bar(x, np.nan_to_num(means), yerr=np.nan_to_num(stds), capsize=3,
               color='tab:blue', alpha=0.7)
        for i, v in enumerate(variants):
            vals = summary[v].get(label, {}).get('values', [])
            ax.plot([i] * len(vals), vals, 'k.', ms=4)
        ax.set_title(label)
        ax.set_xticks(x, variants, rotation=60, ha='right', fontsize=8)
    ax = axes[-1]
    classes = [label for label, _ in PER_CLASS
               if any(label in summary[v] for v in variants)]
    width = 0.8 / max(len(variants), 1)
    for i, v in enumerate(variants):
        means = [summary[v].get(c, {}).get('mean', math.nan) for c in classes]
        stds = [summary[v].get(c, {}).get('std', math.nan) for c in classes]
        ax.bar(np.arange(len(classes)) + i * width, np.nan_to_num(means),
               width, yerr=np.nan_to_num(stds), capsize=2, label=v)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2,
                  [c.split(' ', 1)[1] for c in classes], rotation=30,
                  ha='right', fontsize=8)
    ax.set_title('per-class IoU@max')
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_open(path, 'wb') as f:
        fig.savefig(f, format='png', dpi=110)
    plt.close(fig)

