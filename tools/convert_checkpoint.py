"""Convert an mmdet3d projects/BEVFusion checkpoint to fuller's module names
(or back with ``--reverse``).

    python tools/convert_checkpoint.py IN.pth OUT.pth [--reverse]

Writes OUT.pth (``{'state_dict': ..., 'meta': ...}``) and, beside it,
``OUT.conversion.json``: every source key, either mapped (destination, both
shapes, layout transform) or unmapped with the reason. Both files are written
atomically. The mapping lives in :mod:`fuller.utils.bevfusion_checkpoint`.
"""
import argparse
import json
import os


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='input checkpoint')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument('--reverse', action='store_true',
                        help='fuller -> mmdet3d projects/BEVFusion names')
    parser.add_argument('--reference-classes', nargs='+', default=None,
                        help='class order of the reference checkpoint '
                        "(default: mmdet3d projects/BEVFusion's, "
                        'fuller.utils.bevfusion_checkpoint.REFERENCE_CLASSES)')
    parser.add_argument('--fuller-classes', nargs='+', default=None,
                        help='class order of the fuller model (default: '
                        "mmdet3d NuScenesDataset's, as fuller's configs)")
    return parser.parse_args(argv)


def report_path(dst: str) -> str:
    return os.path.splitext(dst)[0] + '.conversion.json'


def main(argv=None) -> dict:
    args = parse_args(argv)
    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        raise SystemExit('convert_checkpoint: src and dst are the same file')
    # imported once the arguments are valid (`--help` answers at once)
    import torch

    from fuller.utils.bevfusion_checkpoint import (REFERENCE_CLASSES,
                                                   convert_state_dict)
    from fuller.utils.checkpoint_loading import (extract_state_dict,
                                                 read_checkpoint)
    from fuller.utils.io import atomic_open
    if args.reference_classes is None:
        args.reference_classes = list(REFERENCE_CLASSES)
    state = extract_state_dict(read_checkpoint(args.src), args.src)
    out, report = convert_state_dict(
        state, to_fuller=not args.reverse,
        reference_classes=args.reference_classes,
        fuller_classes=args.fuller_classes)
    report['source'] = os.path.abspath(args.src)
    report['output'] = os.path.abspath(args.dst)
    meta = dict(converted_from=report['source'],
                direction=report['direction'],
                classes=report['classes']['destination'])
    with atomic_open(args.dst, 'wb') as f:
        torch.save(dict(state_dict=out, meta=meta), f)
    with atomic_open(report_path(args.dst), 'w') as f:
        json.dump(report, f, indent=1)
    c = report['counts']
    print(f'{report["direction"]}: {c["mapped"]} keys mapped, '
          f'{c["unmapped"]} unmapped, {c["added"]} added -> {args.dst}')
    reasons = {}
    for item in report['unmapped']:
        reasons.setdefault(item['reason'], []).append(item['key'])
    for reason, keys in reasons.items():
        print(f'  not mapped ({len(keys)} keys, e.g. {keys[0]}): {reason}')
    print(f'report: {report_path(args.dst)}')
    return report


if __name__ == '__main__':
    main()
