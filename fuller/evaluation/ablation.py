"""Aggregation of an ablation study: variants x seeds -> mean, seed spread and
paired differences with 95 % t-intervals, and the multi-task penalty.

Input: ``runs[variant][seed] = metrics`` where ``metrics`` is the flat dict
``tools/test.py --out-metrics`` writes (devkit detection keys under
``NuScenes metric/pred_instances_3d_NuScenes/``, map keys under ``map/``).
A single-task variant simply lacks the other task's keys.

Definitions (each number below is over the seeds a variant has finished):

* mean, and ``std``: the sample standard deviation (ddof=1) over seeds: the
  *seed spread* of one setting;
* paired difference of variant A to variant B: ``A[s] - B[s]`` for every
  seed ``s`` both have (same seed = same initialisation, data order and
  augmentation draws). Its mean ``d``, standard deviation ``sd`` (ddof=1)
  and the 95 % t-interval ``d ± t(0.975, n - 1) * sd / sqrt(n)``;
* verdict from the interval [low, high] (every metric here is higher-is-
  better): 'better' if low > 0, 'worse' if high < 0, 'equivalent' if the
  whole interval lies inside (-margin, +margin) (the stated equivalence
  margin), otherwise 'unresolved' (also with fewer than 2 pairs);
* multi-task penalty of a multi-task variant: its paired difference to the
  single-task model of each task (mAP and NDS against the detection-only
  variant, mIoU@0.5 and mIoU@max against the map-only variant).
"""
import math
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from fuller.structures.nuscenes_world import MAP_CLASSES

DET_PREFIX = 'NuScenes metric/pred_instances_3d_NuScenes/'
# (label, key) of the headline metrics, then per-class IoU (best threshold).
HEADLINE = (('mAP', DET_PREFIX + 'mAP'), ('NDS', DET_PREFIX + 'NDS'),
            ('mIoU@0.5', 'map/mIoU@0.5'), ('mIoU@max', 'map/mIoU@max'))
PER_CLASS = tuple((f'IoU@max {c}', f'map/{c}/IoU@max') for c in MAP_CLASSES)
METRICS = HEADLINE + PER_CLASS
DET_LABELS = ('mAP', 'NDS')
SEG_LABELS = ('mIoU@0.5', 'mIoU@max')
CONFIDENCE = 0.95
# Equivalence margin (absolute, every metric): a difference whose whole 95 %
# interval lies inside (-MARGIN, +MARGIN) is called 'equivalent'.
MARGIN = 0.01

Runs = Mapping[str, Mapping[int, Mapping[str, float]]]


def _stats(values: Sequence[float]) -> Dict:
    arr = np.asarray(values, dtype=np.float64)
    n = int(arr.size)
    return dict(n=n, mean=float(arr.mean()) if n else math.nan,
                std=float(arr.std(ddof=1)) if n > 1 else math.nan,
                values=[float(v) for v in arr])


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t
    return float(t.ppf(p, df))


def paired_interval(diffs: Sequence[float],
                    confidence: float = CONFIDENCE) -> Dict:
    """Mean of paired differences with its two-sided t-interval:
    {n, mean, sd, se, half, low, high} (sd, se, half, low, high are nan for
    fewer than two differences)."""
    s = _stats(diffs)
    n, mean, sd = s['n'], s['mean'], s['std']
    if n < 2:
        return dict(n=n, mean=mean, sd=math.nan, se=math.nan, half=math.nan,
                    low=math.nan, high=math.nan)
    se = sd / math.sqrt(n)
    half = t_quantile(0.5 + confidence / 2, n - 1) * se
    return dict(n=n, mean=mean, sd=sd, se=se, half=half, low=mean - half,
                high=mean + half)


def verdict(low: float, high: float, margin: float = MARGIN) -> str:
    """'better' / 'worse' / 'equivalent' / 'unresolved' from an interval
    (see the module docstring)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return 'unresolved'
    if low > 0:
        return 'better'
    if high < 0:
        return 'worse'
    if -margin < low and high < margin:
        return 'equivalent'
    return 'unresolved'


def compare(a: Mapping[int, Mapping[str, float]],
            b: Mapping[int, Mapping[str, float]], key: str,
            margin: float = MARGIN,
            confidence: float = CONFIDENCE) -> Optional[Dict]:
    """Paired comparison A - B of metric ``key`` over the seeds both have
    (None when there is none): the interval of :func:`paired_interval`
    plus ``seeds``, ``diffs`` and ``verdict``."""
    seeds = sorted(s for s in a if key in a[s] and key in b.get(s, {}))
    if not seeds:
        return None
    diffs = [float(a[s][key]) - float(b[s][key]) for s in seeds]
    out = paired_interval(diffs, confidence)
    out.update(seeds=seeds, diffs=diffs,
               verdict=verdict(out['low'], out['high'], margin))
    return out


def summarize(runs: Runs, baseline: str, metrics: Sequence = METRICS,
              margin: float = MARGIN) -> Dict:
    """Per variant and metric: seed statistics and, for every variant but
    the baseline, the paired comparison with ``baseline`` (``paired``).
    Metrics a variant does not report are left out."""
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
            if variant != baseline:
                paired = compare(by_seed, runs[baseline], key, margin)
                if paired is not None:
                    entry['paired'] = paired
            out[variant][label] = entry
    return out


def penalty(runs: Runs, det_only: str, seg_only: str,
            multitask: Sequence[str], margin: float = MARGIN) -> Dict:
    """{variant: {label: paired comparison}}: each multi-task variant minus
    the single-task model of the task the metric measures (module doc)."""
    keys = dict(HEADLINE)
    out: Dict = {}
    for variant in multitask:
        if variant not in runs:
            continue
        out[variant] = {}
        for labels, ref in ((DET_LABELS, det_only), (SEG_LABELS, seg_only)):
            if ref not in runs:
                continue
            for label in labels:
                c = compare(runs[variant], runs[ref], keys[label], margin)
                if c is not None:
                    out[variant][label] = dict(c, reference=ref)
    return out


def versus(runs: Runs, reference: str, variants: Sequence[str],
           margin: float = MARGIN) -> Dict:
    """{variant: {label: paired comparison}}: each of ``variants`` (but
    ``reference`` itself) minus ``reference`` on every headline metric both
    report, in the shape of :func:`penalty`."""
    out: Dict = {}
    if reference not in runs:
        return out
    for variant in variants:
        if variant == reference or variant not in runs:
            continue
        by_label = {}
        for label, key in HEADLINE:
            c = compare(runs[variant], runs[reference], key, margin)
            if c is not None:
                by_label[label] = dict(c, reference=reference)
        if by_label:
            out[variant] = by_label
    return out


def versus_front(runs: Runs, calibrations: Sequence[str],
                 front: Sequence[str], margin: float = MARGIN) -> Dict:
    """{calibration: {front variant: {label: paired comparison}}}: each
    calibrated variant minus each point of the static-weight front."""
    out: Dict = {}
    for cal in calibrations:
        rows = {f: versus(runs, f, [cal], margin).get(cal) for f in front}
        rows = {f: r for f, r in rows.items() if r}
        if rows:
            out[cal] = rows
    return out


def penalty_change(runs: Runs, base: Mapping, setting: Mapping,
                   margin: float = MARGIN) -> Dict:
    """{variant: {label: paired comparison}}: how far each multi-task role's
    penalty moved from the ``base`` setting to ``setting`` (both shaped like
    a ``penalty_settings`` entry: ``det_only``, ``seg_only`` and ``roles``,
    role -> variant). Per seed s the difference is

        (MT[s] - ST[s]) - (MT0[s] - ST0[s])

    with MT, ST the setting's multi-task variant and single-task model of the
    metric's task and MT0, ST0 the base's, so positive means the penalty
    shrank (or the gain grew). Keyed by the setting's variant; ``reference``
    names the base's."""
    keys = dict(HEADLINE)

    def by_seed_penalty(spec: Mapping, variant: str) -> Dict[int, Dict]:
        """{seed: {metric key: MT - ST}} from :func:`penalty`'s diffs."""
        table = penalty(runs, spec['det_only'], spec['seg_only'], [variant],
                        margin).get(variant, {})
        out: Dict[int, Dict] = {}
        for label, c in table.items():
            for s, d in zip(c['seeds'], c['diffs']):
                out.setdefault(s, {})[keys[label]] = d
        return out

    out: Dict = {}
    base_roles = base.get('roles', {})
    for role, variant in setting.get('roles', {}).items():
        if role not in base_roles or variant not in runs:
            continue
        now = by_seed_penalty(setting, variant)
        before = by_seed_penalty(base, base_roles[role])
        by_label = {}
        for label, key in HEADLINE:
            c = compare(now, before, key, margin)
            if c is not None:
                by_label[label] = dict(c, reference=base_roles[role])
        if by_label:
            out[variant] = by_label
    return out


def penalty_trend(settings: Mapping[str, Mapping], runs: Runs,
                  margin: float = MARGIN) -> Dict:
    """{setting: :func:`penalty_change` from the first setting}: the trend of
    the penalty along capacity, schedule and per-task decoders, against the
    first (reference) setting of ``settings``."""
    names = list(settings)
    if not names:
        return {}
    base = settings[names[0]]
    return {name: penalty_change(runs, base, settings[name], margin)
            for name in names[1:]}


def _fmt(x: Optional[float], digits: int = 3) -> str:
    return '-' if x is None or not math.isfinite(x) else f'{x:.{digits}f}'


def fmt_interval(c: Dict) -> str:
    """'+0.012 [-0.003, +0.027] (n=5) better' for a paired comparison."""
    if not math.isfinite(c['low']):
        return f"{c['mean']:+.3f} (n={c['n']}) {c['verdict']}"
    return (f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] "
            f"(n={c['n']}) {c['verdict']}")


def _rule(margin: float, confidence: float = CONFIDENCE) -> str:
    return (f'Paired differences: mean over seeds of (variant - reference) '
            f'for the same seed (same initialisation, data order and '
            f'augmentation draws), with its {confidence:.0%} t-interval '
            f'(sd of the differences / sqrt(n), n - 1 degrees of freedom). '
            f'Verdict from the interval: better (above 0), worse (below 0), '
            f'equivalent (inside ±{margin}), otherwise unresolved.')


def render_markdown(summary: Dict, baseline: str,
                    metrics: Sequence = METRICS,
                    margin: float = MARGIN) -> str:
    """Two tables: mean ± seed spread per variant, and paired differences
    to ``baseline`` with their intervals and verdicts."""
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
    lines += ['', f'Paired difference to `{baseline}`. ' + _rule(margin), '',
              '| variant | metric | mean diff | 95 % interval | per-seed diffs'
              ' | verdict |', '| --- | --- | ---: | --- | --- | --- |']
    for v in variants:
        for label in labels:
            p = summary[v].get(label, {}).get('paired')
            if p is None:
                continue
            per_seed = ', '.join(f'{d:+.3f}' for d in p['diffs'])
            interval = (f"[{p['low']:+.3f}, {p['high']:+.3f}]"
                        if math.isfinite(p['low']) else '-')
            lines.append(f"| {v} | {label} | {p['mean']:+.3f} | {interval} | "
                         f"{per_seed} | {p['verdict']} |")
    return '\n'.join(lines) + '\n'


def render_penalty(table: Dict, margin: float = MARGIN,
                   row_title: str = 'multi-task variant') -> str:
    """The multi-task penalty (:func:`penalty`) or comparisons
    (:func:`versus`) as a Markdown table, one row per key of ``table``; a
    column names its reference where every row has the same one."""
    labels = DET_LABELS + SEG_LABELS
    refs: Dict[str, set] = {}
    for by_label in table.values():
        for label, c in by_label.items():
            refs.setdefault(label, set()).add(c['reference'])
    head = [f'{label} vs `{next(iter(refs[label]))}`' if len(refs[label]) == 1
            else label for label in labels if label in refs]
    lines = [f'| {row_title} | ' + ' | '.join(head) + ' |',
             '| --- |' + ' --- |' * len(head)]
    for v, by_label in table.items():
        cells = [fmt_interval(by_label[label]) if label in by_label else '-'
                 for label in labels if label in refs]
        lines.append(f'| {v} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def render_report(data: Dict) -> str:
    """The whole ``results.md`` of a study from its ``results.json`` dict
    (``tools/ablation.py`` writes both): recomputed from the per-seed
    metrics in ``data['runs']``, so the table cannot drift from the JSON."""
    runs = {v: {int(s): m for s, m in by_seed.items()}
            for v, by_seed in data['runs'].items()}
    margin = float(data.get('margin', MARGIN))
    baseline = data['baseline']
    summary = summarize(runs, baseline, margin=margin)
    parts = [f"# Ablation study `{data['study']}`\n",
             f"Command: `{data['command']}`\n",
             f"Commit(s) of the runs: {', '.join(data['commits']) or 'unknown'}"
             '\n']
    machines = data.get('machines')
    if machines:
        parts.append('Machine(s) of the runs: ' + '; '.join(machines) + '\n')
    parts.append(f"Seeds: {data['seeds']}. Mean ± seed spread (sample std "
                 'over seeds).\n')
    parts.append(render_markdown(summary, baseline, margin=margin))
    for name, spec in data.get('penalty_settings', {}).items():
        table = penalty(runs, spec['det_only'], spec['seg_only'],
                        spec['multitask'], margin)
        if table:
            parts.append(f'## Multi-task penalty: `{name}`\n\n'
                         'Multi-task minus single-task, per task. ' +
                         _rule(margin) + '\n\n' + render_penalty(table, margin))
        against = versus(runs, spec.get('plain_sum', ''), spec['multitask'],
                         margin)
        if against:
            parts.append(f'### Against the plain sum of `{name}`\n\n'
                         f"Each other multi-task variant minus "
                         f"`{spec['plain_sum']}`.\n\n" +
                         render_penalty(against, margin))
        front = versus_front(runs, spec.get('calibrations', []),
                             spec.get('front', []), margin)
        if front:
            rows = {f'{cal} - {f}': by_label for cal, by_front in front.items()
                    for f, by_label in by_front.items()}
            parts.append(f'### Calibrations against the static-weight front of '
                         f'`{name}`\n\nEach calibrated variant minus each plain '
                         f'sum with a static map-loss weight.\n\n' +
                         render_penalty(rows, margin, row_title='comparison'))
    settings = data.get('penalty_settings', {})
    trend = penalty_trend(settings, runs, margin)
    first = next(iter(settings), None)
    for name, table in trend.items():
        if table:
            rows = {f"{v} - {next(iter(by_label.values()))['reference']}": by_label
                    for v, by_label in table.items()}
            parts.append(
                f'## Change of the penalty from `{first}` to `{name}`\n\n'
                f'Per seed, (multi-task - single-task) in `{name}` minus the '
                f'same in `{first}`, for the same role (positive: the '
                f'penalty shrank). ' + _rule(margin) + '\n\n' +
                render_penalty(rows, margin, row_title='role'))
    chart = data.get('chart', 'results.png')
    parts.append(f'![chart]({chart})\n')
    if data.get('penalty_settings'):
        stem = chart[:-len('.png')]
        parts.append(f'![Pareto]({stem}_pareto.png)\n\n'
                     f'![penalty]({stem}_penalty.png)\n')
    return '\n'.join(parts)


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


def mean_interval(values: Sequence[float],
                  confidence: float = CONFIDENCE) -> List[float]:
    """[low, high] of the t-interval of the mean of ``values``."""
    c = paired_interval(values, confidence)
    return [c['low'], c['high']]
