"""Charts of the multi-task study (``tools/ablation.py --study multitask``).

* Pareto chart, one panel per setting: mAP (y) against mIoU@0.5 (x) of each
  multi-task variant, the mean with its 95 % t-interval as bars; the
  single-task references as lines (detection-only mAP horizontal, map-only
  mIoU@0.5 vertical) with their intervals shaded. A variant in the upper
  right corner formed by the two lines matches both single-task models.
* Penalty chart: per task (mAP vs detection-only, mIoU@0.5 vs map-only), the
  mean paired difference multi-task minus single-task with its 95 %
  t-interval, per setting (x) and variant (colour); a cell with fewer than
  two paired seeds (no interval) is left out.

Both charts give a role (the variant's name without the setting's suffix)
one colour in every panel.

``runs[variant][seed] = metrics`` as in :mod:`fuller.evaluation.ablation`;
``settings[name] = {det_only, seg_only, multitask: [variants]}``.
"""
import math
from typing import Dict, Mapping, Sequence

import numpy as np

from .ablation import HEADLINE, MARGIN, compare, mean_interval

_KEYS = dict(HEADLINE)


def _values(runs: Mapping, variant: str, label: str):
    key = _KEYS[label]
    return [m[key] for _, m in sorted(runs.get(variant, {}).items())
            if key in m]


def _mean_bar(values: Sequence[float]):
    """(mean, half-width of its 95 % interval; 0 if under 2 values)."""
    if not values:
        return math.nan, 0.0
    low, high = mean_interval(values)
    mean = float(np.mean(values))
    return mean, (0.0 if not math.isfinite(low) else (high - low) / 2)


def _save(fig, path: str) -> None:
    import matplotlib.pyplot as plt

    from fuller.utils.io import atomic_open
    fig.tight_layout()
    with atomic_open(path, 'wb') as f:
        fig.savefig(f, format='png', dpi=110)
    plt.close(fig)


def _roles(settings: Mapping[str, Dict], names: Sequence[str]) -> Dict:
    """{role: matplotlib colour}: a variant's role is its name without the
    setting's suffix (``naive-w128`` -> ``naive``); one colour per role in
    every panel of both charts."""
    roles = sorted({_role(v, n) for n in names for v in settings[n]['multitask']})
    return {role: f'C{i}' for i, role in enumerate(roles)}


def _role(variant: str, setting: str) -> str:
    return variant.replace(f'-{setting}', '')


def pareto_chart(runs: Mapping, settings: Mapping[str, Dict],
                 path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = [n for n, s in settings.items() if s['multitask']]
    if not names:
        return
    colours = _roles(settings, names)
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 4.5),
                             squeeze=False)
    for ax, name in zip(axes[0], names):
        spec = settings[name]
        det, det_h = _mean_bar(_values(runs, spec['det_only'], 'mAP'))
        seg, seg_h = _mean_bar(_values(runs, spec['seg_only'], 'mIoU@0.5'))
        if math.isfinite(det):
            ax.axhline(det, color='k', ls='--', lw=1,
                       label=f"{spec['det_only']} mAP")
            ax.axhspan(det - det_h, det + det_h, color='k', alpha=0.08)
        if math.isfinite(seg):
            ax.axvline(seg, color='k', ls=':', lw=1,
                       label=f"{spec['seg_only']} mIoU@0.5")
            ax.axvspan(seg - seg_h, seg + seg_h, color='k', alpha=0.08)
        for variant in spec['multitask']:
            x, xh = _mean_bar(_values(runs, variant, 'mIoU@0.5'))
            y, yh = _mean_bar(_values(runs, variant, 'mAP'))
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            n = len(_values(runs, variant, 'mAP'))
            ax.errorbar(x, y, xerr=xh, yerr=yh, fmt='o', capsize=3,
                        color=colours[_role(variant, name)],
                        label=f'{variant} (n={n})')
        ax.set_xlabel('mIoU@0.5')
        ax.set_ylabel('mAP')
        ax.set_title(f'setting {name}: mean, 95 % interval')
        ax.legend(fontsize=7)
    _save(fig, path)


def penalty_chart(runs: Mapping, settings: Mapping[str, Dict], path: str,
                  margin: float = MARGIN) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    names = [n for n, s in settings.items() if s['multitask']]
    if not names:
        return
    colours = _roles(settings, names)
    roles = list(colours)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / max(len(roles), 1)
    for ax, (label, ref) in zip(axes, (('mAP', 'det_only'),
                                       ('mIoU@0.5', 'seg_only'))):
        for i, role in enumerate(roles):
            xs, ys, hs = [], [], []
            for j, name in enumerate(names):
                spec = settings[name]
                variant = next((v for v in spec['multitask']
                                if _role(v, name) == role), None)
                if variant is None or variant not in runs or \
                        spec[ref] not in runs:
                    continue
                c = compare(runs[variant], runs[spec[ref]], _KEYS[label],
                            margin)
                if c is None or len(c['seeds']) < 2:  # no interval yet
                    continue
                xs.append(j + i * width)
                ys.append(c['mean'])
                hs.append(c['half'] if math.isfinite(c['half']) else 0.0)
            if xs:
                ax.errorbar(xs, ys, yerr=hs, fmt='o', capsize=3,
                            color=colours[role], label=role)
        ax.axhline(0, color='k', lw=1)
        ax.axhspan(-margin, margin, color='g', alpha=0.1,
                   label=f'±{margin} margin')
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
        ax.set_title(f'multi-task - single-task {label} (95 % interval)')
        ax.legend(fontsize=7)
    _save(fig, path)
