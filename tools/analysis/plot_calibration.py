"""Plot FULLER's calibration diagnostics from an mmengine scalar log.

mmengine's LoggerHook writes ``<work_dir>/<timestamp>/vis_data/scalars.json``
(one json object per logged iteration, with ``step`` and the logged scalars).
GradientCalibrationHook logs ``calib/...`` keys there; this tool draws one PNG
per group (``calib/alpha/*`` -> ``calib_alpha.png``, ``calib/norm/task/*`` ->
``calib_norm_task.png``, ``calib/cos/*``, ``calib/modality_ratio/*`` ...).
A group ``<g>_plain`` (e.g. ``calib/share_plain/*``, what the plain summed
loss would give) is drawn dashed in ``<g>``'s figure, in the same colours.
What each task gets: ``calib_share.png`` (share of the applied trunk update
per task, dashed: the plain sum's) and ``calib_proj_rel.png`` (projection on
each task's unit gradient relative to the plain sum's); the step each branch
took: ``calib_norm_step.png`` and ``calib_step_rel.png``.

Usage::

    python tools/analysis/plot_calibration.py work_dirs/fuller_tiny \
        [--out-dir plots/] [--prefix calib/]

The first argument is a scalars.json file or a work dir (its newest
``*/vis_data/scalars.json`` is used).
"""
import argparse
import json
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Tuple

Series = Dict[str, Tuple[List[float], List[float]]]
PLAIN = '_plain'


def find_scalars_json(path: str) -> Path:
    """``path`` itself if a file, else the newest vis_data/scalars.json."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(
            f'tools/analysis/plot_calibration.py: {path} is neither a '
            'scalars.json file nor a work dir')
    found = sorted(path.glob('**/vis_data/scalars.json'),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(
            f'tools/analysis/plot_calibration.py: no */vis_data/scalars.json '
            f'under {path}; was training run with a LoggerHook?')
    return found[-1]


def load_series(json_path: Path, prefix: str = 'calib/') -> Series:
    """{key: (steps, values)} of every numeric key starting with ``prefix``."""
    series: Series = OrderedDict()
    with open(json_path) as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f'tools/analysis/plot_calibration.py: '
                                 f'{json_path}:{lineno} is not json ({err})')
            step = record.get('step', record.get('iter', lineno))
            for key, value in record.items():
                if key.startswith(prefix) and isinstance(value, (int, float)):
                    steps, values = series.setdefault(key, ([], []))
                    steps.append(step)
                    values.append(float(value))
    return series


def group_series(series: Series, prefix: str = 'calib/'
                 ) -> Dict[str, Series]:
    """Group by the key minus its last part (calib/norm/task/x -> norm/task)."""
    groups: Dict[str, Series] = defaultdict(OrderedDict)
    for key, data in series.items():
        group, _, name = key[len(prefix):].rpartition('/')
        groups[group or name][name] = data
    return groups


def _save_atomic(fig, out_path: Path) -> None:
    from fuller.utils.io import atomic_open  # not at the top: `--help` stays fast
    with atomic_open(str(out_path), 'wb') as f:
        fig.savefig(f, dpi=100, format='png')


def plot_calibration(json_path: str, out_dir: Optional[str] = None,
                     prefix: str = 'calib/') -> List[Path]:
    """Write one PNG per group; returns their paths."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    json_path = find_scalars_json(json_path)
    groups = group_series(load_series(json_path, prefix), prefix)
    if not groups:
        raise ValueError(
            f'tools/analysis/plot_calibration.py: no {prefix}* scalars in '
            f'{json_path}; was GradientCalibrationHook enabled?')
    out = Path(out_dir) if out_dir else json_path.parent / 'calibration_plots'
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for group, members in groups.items():
        if group.endswith(PLAIN) and group[:-len(PLAIN)] in groups:
            continue  # drawn dashed in its base group's figure
        fig, ax = plt.subplots(figsize=(7, 4))
        colours = {}
        for name, (steps, values) in members.items():
            line, = ax.plot(steps, values, label=name, linewidth=1.2)
            colours[name] = line.get_color()
        for name, (steps, values) in groups.get(group + PLAIN, {}).items():
            ax.plot(steps, values, label=f'{name} (plain sum)',
                    linestyle='--', linewidth=1.0, color=colours.get(name))
        positive = all(v > 0 for _, vals in members.values() for v in vals)
        if group.startswith('norm') and positive:
            ax.set_yscale('log')
        ax.set_xlabel('iteration')
        ax.set_title(f'{prefix}{group}')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"{prefix.strip('/').replace('/', '_')}_" \
                     f"{group.replace('/', '_')}.png"
        _save_atomic(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('log', help='scalars.json or a work dir')
    parser.add_argument('--out-dir', default=None,
                        help='default: <log dir>/calibration_plots')
    parser.add_argument('--prefix', default='calib/')
    args = parser.parse_args(argv)
    for path in plot_calibration(args.log, args.out_dir, args.prefix):
        print(path)


if __name__ == '__main__':
    main()
