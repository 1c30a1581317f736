"""Write the demo report: detection (devkit mAP/NDS) and map segmentation
(mIoU@0.5, mIoU@max) of each evaluated run, side by side, as Markdown.

    python tools/analysis/demo_report.py --run fuller work_dirs/demo/fuller/metrics.json \
        --run baseline work_dirs/demo/baseline/metrics.json --out work_dirs/demo/report.md
"""
import argparse
import json
import os.path as osp
from typing import Dict, List, Tuple

from fuller.utils.io import atomic_open

DET = 'NuScenes metric/pred_instances_3d_NuScenes/'
MAP_CLASSES = ('drivable_area', 'ped_crossing', 'walkway', 'stop_line',
               'carpark_area', 'divider')
ROWS = [('mAP', DET + 'mAP'), ('NDS', DET + 'NDS'), ('mATE', DET + 'mATE'),
        ('mASE', DET + 'mASE'), ('mAOE', DET + 'mAOE'),
        ('mAVE', DET + 'mAVE'), ('mAAE', DET + 'mAAE'),
        ('map mIoU@0.5 (fixed threshold)', 'map/mIoU@0.5'),
        ('map mIoU@max (best threshold per class)', 'map/mIoU@max')] + [
            (f'IoU@0.5 {c}', f'map/{c}/IoU@0.50') for c in MAP_CLASSES]


def load_metrics(path: str) -> Dict[str, float]:
    if not osp.isfile(path):
        raise FileNotFoundError(f'metrics file {path} does not exist; run '
                                'tools/test.py ... --out-metrics first')
    with open(path) as f:
        return json.load(f)


def render(runs: List[Tuple[str, Dict[str, float]]], notes: str = '') -> str:
    lines = ['# fuller demo report', '']
    if notes:
        lines += [notes, '']
    lines.append('| metric | ' + ' | '.join(name for name, _ in runs) + ' |')
    lines.append('| --- |' + ' --- |' * len(runs))
    for label, key in ROWS:
        vals = [m.get(key) for _, m in runs]
        if all(v is None for v in vals):
            continue
        cells = ['-' if v is None else f'{v:.4f}' for v in vals]
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    lines += ['', 'mAP/NDS: nuscenes-devkit DetectionEval (detection_cvpr_2019).',
              'mIoU@max takes the best of the thresholds 0.35..0.65 per '
              'class on the evaluation set (comparable with published '
              'BEVFusion tables); mIoU@0.5 uses one fixed threshold.', '']
    return '\n'.join(lines)


def write_atomic(path: str, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--run', nargs=2, action='append', required=True,
                        metavar=('NAME', 'METRICS_JSON'))
    parser.add_argument('--out', required=True, help='report .md path')
    parser.add_argument('--notes', default='', help='text under the title')
    args = parser.parse_args(argv)
    runs = [(name, load_metrics(path)) for name, path in args.run]
    text = render(runs, args.notes)
    write_atomic(args.out, text)
    print(text)


if __name__ == '__main__':
    main()
