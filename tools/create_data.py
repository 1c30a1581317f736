"""Create fuller's dataset files: mmdet3d v2 info pkls and BEV map masks.

Usage::

    python tools/create_data.py nuscenes --root-path data/nuscenes \\
        --out-dir data/nuscenes --version v1.0-trainval [--workers 8] \\
        [--max-sweeps 10] [--extra-tag nuscenes] [--skip-map-masks] [--config CONFIG]

Writes ``OUT/<extra-tag>_infos_{train,val}.pkl`` (``_test`` for v1.0-test;
v1.0-mini uses the mini_train / mini_val scenes) and
``OUT/map_masks/<sample token>.npz``. Re-running skips valid mask files.
"""
import argparse
import sys
import time
from typing import List, Optional


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    # standard library only: `--help` answers before fuller (torch) is imported;
    # main() checks the version against fuller.data_prep.nuscenes_infos.VERSION_SPLITS
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='dataset', required=True)
    nus = sub.add_parser('nuscenes', help='nuScenes infos + map masks')
    nus.add_argument('--root-path', required=True,
                     help='nuScenes dataroot (holds <version>/, samples/, '
                     'sweeps/, maps/expansion/)')
    nus.add_argument('--out-dir', required=True,
                     help='where the pkls and map_masks/ go (usually the '
                     'dataroot: map_mask_path is relative to it)')
    nus.add_argument('--version', default='v1.0-trainval',
                     help='v1.0-trainval, v1.0-test or v1.0-mini')
    nus.add_argument('--workers', type=int, default=4,
                     help='processes for the map masks (0: in-process)')
    nus.add_argument('--max-sweeps', type=int, default=10)
    nus.add_argument('--extra-tag', default='nuscenes',
                     help='pkl name prefix: <tag>_infos_<split>.pkl')
    nus.add_argument('--skip-map-masks', action='store_true',
                     help='write only the infos (no map expansion needed)')
    nus.add_argument('--config', default=None,
                     help="rasterise the map masks on this model config's "
                     'geometry.map_grid (default: the published 100 m x 100 m, '
                     '0.5 m grid)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    from fuller.data_prep.nuscenes_infos import (check_version,
                                                 create_nuscenes_data)
    try:
        check_version(args.version)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    map_grid = None
    if args.config is not None:
        # only the declared map grid is read: no custom imports (no model code), no check
        from mmengine.config import Config
        cfg = Config.fromfile(args.config, import_custom_modules=False)
        map_grid = (cfg.get('geometry') or {}).get('map_grid')
    start = time.perf_counter()
    try:
        paths = create_nuscenes_data(
            args.root_path, args.out_dir, args.version,
            max_sweeps=args.max_sweeps, extra_tag=args.extra_tag,
            workers=args.workers, skip_map_masks=args.skip_map_masks,
            map_grid=map_grid)
    except (FileNotFoundError, ValueError) as err:  # bad input, named
        print(f'error: {err}', file=sys.stderr)
        return 1
    for split, path in paths.items():
        print(f'{split}: {path}')
    print(f'done in {time.perf_counter() - start:.1f} s')
    return 0


if __name__ == '__main__':
    sys.exit(main())
