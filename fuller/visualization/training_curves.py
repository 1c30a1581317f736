"""Per-task training loss curves from mmengine's logs.

mmengine's ``LoggerHook`` writes one json object per logged iteration to
``<work_dir>/<timestamp>/vis_data/scalars.json`` (and the same records to
``<work_dir>/<timestamp>/<timestamp>.json``). fuller's multi-task detector
names its losses ``<task>/<loss name>`` (``det/loss_heatmap``,
``seg/loss_drivable_area`` ...); a task's curve is the sum of its ``loss``
keys at each logged step, and ``total`` is mmengine's ``loss``.
"""
import json
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Tuple

Series = Tuple[List[float], List[float]]  # (steps, values)


def find_scalar_log(work_dir: str) -> Path:
    """The newest ``*/vis_data/scalars.json`` under ``work_dir``, else the
    newest ``<timestamp>/<timestamp>.json`` json log."""
    root = Path(work_dir)
    if root.is_file():
        return root
    if not root.is_dir():
        raise FileNotFoundError(f'work dir {root} does not exist')
    found = sorted(root.glob('*/vis_data/scalars.json'),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        found = sorted((p for p in root.glob('*/*.json')
                        if p.stem == p.parent.name),
                       key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(
            f'no training log under {root}: expected '
            '<timestamp>/vis_data/scalars.json or <timestamp>/<timestamp>.json '
            '(mmengine LoggerHook)')
    return found[-1]


def load_scalars(path: str) -> List[dict]:
    """The json records of a scalar log (a file, or a work dir)."""
    path = find_scalar_log(path)
    records = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f'{path}:{lineno} is not json ({err})')
    return records


def task_loss_series(records: List[dict]) -> Dict[str, Series]:
    """{task: (steps, summed losses)} plus ``total`` from ``loss``.

    Only records with loss keys count (validation records have none); the
    step is the record's ``step`` (mmengine's global iteration), else
    ``iter``.
    """
    series: Dict[str, Series] = OrderedDict()
    for rec in records:
        sums: Dict[str, float] = OrderedDict()
        for key, value in rec.items():
            if not isinstance(value, (int, float)) or '/' not in key:
                continue
            task, _, name = key.partition('/')
            if name.startswith('loss') or '/loss' in '/' + name:
                sums[task] = sums.get(task, 0.0) + float(value)
        if isinstance(rec.get('loss'), (int, float)):
            sums['total'] = float(rec['loss'])
        if not sums:
            continue
        step = rec.get('step', rec.get('iter'))
        if step is None:
            continue
        for task, value in sums.items():
            steps, values = series.setdefault(task, ([], []))
            steps.append(float(step))
            values.append(value)
    return series


def plot_task_losses(runs: Dict[str, Dict[str, Series]], out_path: str,
                     dpi: int = 90) -> List[str]:
    """One figure, one panel per task, one line per run; returns the tasks.

    Args:
        runs: {run name: task_loss_series(...)}.
        out_path: the PNG to write (atomically).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter

    from .sample_figure import save_figure
    tasks: List[str] = []
    for series in runs.values():
        tasks += [t for t in series if t not in tasks and t != 'total']
    if any('total' in s for s in runs.values()):
        tasks.append('total')
    if not tasks:
        raise ValueError(f'no loss keys in the logs of runs {list(runs)}')
    fig = Figure(figsize=(4.2 * len(tasks), 3.4), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks):
        for name, series in runs.items():
            if task in series:
                steps, values = series[task]
                ax.plot(steps, values, lw=1.2, label=name)
        ax.set_title(f'{task} loss' if task != 'total' else 'total loss',
                     fontsize=10)
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
        if all(v > 0 for s in runs.values() if task in s for v in s[task][1]):
            ax.set_yscale('log')
            ax.yaxis.set_major_formatter(FormatStrFormatter('%g'))
            ax.yaxis.set_minor_formatter(FormatStrFormatter('%g'))
            ax.tick_params(axis='y', which='minor', labelsize=7)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_path)
    return tasks
