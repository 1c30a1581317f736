"""Write the demo report: one Markdown page read top to bottom.

Sections: the metrics table of every run (devkit mAP/NDS and map mIoU@0.5 /
mIoU@max), the per-task training loss curves of every run on one plot, the
calibration plots, pictures of the same validation samples for every run side
by side, and (optionally) the time of each demo stage.

    python tools/analysis/demo_report.py \
        --run FULLER work_dirs/demo/fuller/metrics.json \
        --run "plain sum" work_dirs/demo/baseline/metrics.json \
        --calibration-dir work_dirs/demo/fuller/calibration_plots \
        --timings work_dirs/demo/timings.tsv --out work_dirs/demo/report.md

A run's work dir (training logs, ``pictures/<token>.png``) is the folder of
its metrics file unless ``--work-dir NAME DIR`` says otherwise. Images are
linked relative to the report; only files that exist are linked.
"""
import argparse
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

DET = 'NuScenes metric/pred_instances_3d_NuScenes/'


def rows() -> List[Tuple[str, str]]:
    """(label, metric key) of the table, per-class map rows last (fuller
    is imported here, not at the top: `--help` answers at once)."""
    from fuller.structures.nuscenes_world import MAP_CLASSES
    return [('mAP', DET + 'mAP'), ('NDS', DET + 'NDS'), ('mATE', DET + 'mATE'),
            ('mASE', DET + 'mASE'), ('mAOE', DET + 'mAOE'),
            ('mAVE', DET + 'mAVE'), ('mAAE', DET + 'mAAE'),
            ('map mIoU@0.5 (fixed threshold)', 'map/mIoU@0.5'),
            ('map mIoU@max (best threshold per class)', 'map/mIoU@max')] + [
                (f'IoU@0.5 {c}', f'map/{c}/IoU@0.50') for c in MAP_CLASSES]


LOSS_PNG = 'loss_curves.png'
PICTURES = 'pictures'


def load_metrics(path: str) -> Dict[str, float]:
    if not osp.isfile(path):
        raise FileNotFoundError(f'metrics file {path} does not exist; run '
                                'tools/test.py ... --out-metrics first')
    with open(path) as f:
        try:
            metrics = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f'metrics file {path} is not json ({err})')
    if not isinstance(metrics, dict):
        raise ValueError(f'metrics file {path} must hold a json object of '
                         f'metric name -> value, got {type(metrics).__name__}')
    return metrics


def metrics_table(runs: Sequence[Tuple[str, Dict[str, float]]]) -> List[str]:
    lines = ['| metric | ' + ' | '.join(name for name, _ in runs) + ' |',
             '| --- |' + ' --- |' * len(runs)]
    for label, key in rows():
        vals = [m.get(key) for _, m in runs]
        if all(v is None for v in vals):
            continue
        cells = ['-' if v is None else f'{v:.4f}' for v in vals]
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    return lines + [
        '', 'mAP/NDS: nuscenes-devkit DetectionEval (detection_cvpr_2019). '
        'mIoU@max takes the best of the thresholds 0.35..0.65 per class on '
        'the evaluation set (comparable with published BEVFusion tables); '
        'mIoU@0.5 uses one fixed threshold.']


def _link(path: str, report_dir: str) -> str:
    return osp.relpath(path, report_dir).replace(os.sep, '/')


def loss_section(work_dirs: Sequence[Tuple[str, str]], report_dir: str
                 ) -> List[str]:
    """Parse each run's log, plot all runs on one figure, link it."""
    from fuller.visualization.training_curves import (load_scalars,
                                                      plot_task_losses,
                                                      task_loss_series)
    runs, missing = {}, []
    for name, work_dir in work_dirs:
        try:
            series = task_loss_series(load_scalars(work_dir))
        except FileNotFoundError:
            series = {}
        if series:
            runs[name] = series
        else:
            missing.append(name)
    lines = ['## Training loss per task', '']
    if runs:
        out = osp.join(report_dir, LOSS_PNG)
        tasks = plot_task_losses(runs, out)
        lines += [f'One panel per task ({", ".join(tasks)}; a task\'s loss '
                  'is the sum of its loss terms), one line per run, from '
                  "mmengine's scalar log.", '',
                  f'![training loss per task]({_link(out, report_dir)})']
    if missing:
        lines += ['', f'No training log found for: {", ".join(missing)}.']
    return lines + ['']


def calibration_section(calib_dir: Optional[str], report_dir: str
                        ) -> List[str]:
    if not calib_dir:
        return []
    lines = ['## Gradient calibration (FULLER)', '']
    pngs = sorted(f for f in os.listdir(calib_dir)
                  if f.endswith('.png')) if osp.isdir(calib_dir) else []
    if not pngs:
        return lines + [f'No calibration plots in {calib_dir}.', '']
    lines += ['The diagnostics GradientCalibrationHook logs during training '
              '(tools/analysis/plot_calibration.py).', '']
    for f in pngs:
        lines += [f'![{osp.splitext(f)[0]}]'
                  f'({_link(osp.join(calib_dir, f), report_dir)})', '']
    return lines


def pictures_section(work_dirs: Sequence[Tuple[str, str]], report_dir: str,
                     subdir: str = PICTURES) -> List[str]:
    """One table row per sample token, one column per run."""
    per_run = []
    for name, work_dir in work_dirs:
        folder = osp.join(work_dir, subdir)
        files = sorted(f for f in os.listdir(folder)
                       if f.endswith('.png')) if osp.isdir(folder) else []
        per_run.append((name, folder, files))
    tokens: List[str] = []
    for _, _, files in per_run:
        tokens += [osp.splitext(f)[0] for f in files
                   if osp.splitext(f)[0] not in tokens]
    lines = ['## Predictions on validation samples', '']
    if not tokens:
        return lines + ['No prediction pictures found.', '']
    lines += ['The same samples for every run. Left panel: bird\'s-eye view '
              'in the LiDAR frame (metres, ego at the origin, arrow = '
              'forward); LiDAR points dark, GT boxes green, predicted boxes '
              'red with their score, GT map masks filled, predicted map '
              'masks outlined. Right: the six cameras with the same boxes '
              'projected.', '',
              '| sample | ' + ' | '.join(n for n, _, _ in per_run) + ' |',
              '| --- |' + ' --- |' * len(per_run)]
    for token in tokens:
        cells = []
        for name, folder, files in per_run:
            f = f'{token}.png'
            cells.append(f'![{name} {token[:8]}]'
                         f'({_link(osp.join(folder, f), report_dir)})'
                         if f in files else '(no picture)')
        lines.append(f'| `{token[:8]}` | ' + ' | '.join(cells) + ' |')
    return lines + ['']


def load_timings(path: str) -> List[Tuple[str, float, str]]:
    """``stage<TAB>seconds[<TAB>block]`` lines (tools/run_demo.sh writes
    them) as (stage, seconds, block). A stage with a block ran beside the
    other stages of that block; the block's own row (no block, written
    before its stages) holds its wall time, so the rows without a block add
    up to the wall time."""
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rstrip('\n').split('\t')
            try:
                secs = float(parts[1]) if len(parts) in (2, 3) else None
            except ValueError:
                secs = None
            if secs is None:
                raise ValueError(f'{path}:{lineno}: expected '
                                 f'"stage<TAB>seconds[<TAB>block]", got '
                                 f'{line!r}')
            rows.append((parts[0], secs, parts[2] if len(parts) == 3 else ''))
    return rows


def timings_section(path: Optional[str]) -> List[str]:
    if not path:
        return []
    rows = load_timings(path)
    total = sum(s for _, s, block in rows if not block)
    lines = ['## Demo stage timings', '', '| stage | seconds | share |',
             '| --- | ---: | ---: |']
    for stage, secs, block in rows:
        if block:   # overlaps the others of its block: no share of the total
            lines.append(f'| &emsp;{stage} | {secs:.0f} | |')
            continue
        share = secs / total if total > 0 else 0.0
        lines.append(f'| {stage} | {secs:.0f} | {share:.0%} |')
    note = (['', 'Indented stages ran beside the other stages of the block '
             'above them, whose row is its wall time; the total adds up the '
             'rows that are not indented: the wall time of the demo.']
            if any(block for _, _, block in rows) else [])
    return lines + [f'| total | {total:.0f} | |'] + note + ['']


def render(runs: Sequence[Tuple[str, Dict[str, float]]], notes: str = '',
           work_dirs: Sequence[Tuple[str, str]] = (),
           report_dir: str = '.', calibration_dir: Optional[str] = None,
           timings: Optional[str] = None) -> str:
    """The report's Markdown (writes the loss plot into ``report_dir``)."""
    lines = ['# fuller demo report', '']
    if notes:
        lines += [notes, '']
    lines += ['## Metrics', ''] + metrics_table(runs) + ['']
    if work_dirs:
        lines += loss_section(work_dirs, report_dir)
    lines += calibration_section(calibration_dir, report_dir)
    if work_dirs:
        lines += pictures_section(work_dirs, report_dir)
    lines += timings_section(timings)
    return '\n'.join(lines)


def write_atomic(path: str, text: str) -> None:
    from fuller.utils.io import atomic_open
    with atomic_open(path) as f:
        f.write(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--run', nargs=2, action='append', required=True,
                        metavar=('NAME', 'METRICS_JSON'))
    parser.add_argument('--work-dir', nargs=2, action='append', default=[],
                        metavar=('NAME', 'DIR'),
                        help="a run's work dir (default: its metrics' folder)")
    parser.add_argument('--calibration-dir', help='PNGs of plot_calibration')
    parser.add_argument('--timings',
                        help='stage<TAB>seconds[<TAB>block] file')
    parser.add_argument('--out', required=True, help='report .md path')
    parser.add_argument('--notes', default='', help='text under the title')
    args = parser.parse_args(argv)
    runs = [(name, load_metrics(path)) for name, path in args.run]
    given = dict(args.work_dir)
    unknown = set(given) - {name for name, _ in args.run}
    if unknown:
        parser.error(f'--work-dir for runs not given with --run: {unknown}')
    work_dirs = [(name, given.get(name, osp.dirname(osp.abspath(path))))
                 for name, path in args.run]
    report_dir = osp.dirname(osp.abspath(args.out))
    os.makedirs(report_dir, exist_ok=True)
    text = render(runs, args.notes, work_dirs, report_dir,
                  args.calibration_dir, args.timings)
    write_atomic(args.out, text)
    print(f'[demo_report] {args.out}')


if __name__ == '__main__':
    main()
