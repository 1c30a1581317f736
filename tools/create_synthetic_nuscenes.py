"""Generate a synthetic nuScenes dataroot (official layout, devkit-loadable).

Example::

    python tools/create_synthetic_nuscenes.py --root data/nuscenes-synthetic \\
        --num-scenes 4 --keyframes 8 --image-size 704 396

See :func:`fuller.data_prep.synthetic.generate_synthetic_nuscenes`.
"""
import argparse
import json
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description='Write a synthetic dataset in the nuScenes layout '
        '(v1.0-mini/-trainval/-test tables, LIDAR_TOP sweeps, six cameras, '
        'map expansion; v1.0-test without annotations, like the real one).')
    p.add_argument('--root', default='data/nuscenes-synthetic',
                   help='output dataroot (written atomically)')
    p.add_argument('--num-scenes', type=int, default=4)
    p.add_argument('--keyframes', type=int, default=8,
                   help='2 Hz keyframes (samples) per scene')
    p.add_argument('--sweeps', type=int, default=4,
                   help='LiDAR sweeps between keyframes (4 -> 10 Hz)')
    p.add_argument('--image-size', type=int, nargs=2, metavar=('W', 'H'),
                   default=(1600, 900),
                   help='16:9 camera image size, e.g. 704 396 for speed')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--version', default='v1.0-mini',
                   choices=('v1.0-mini', 'v1.0-trainval', 'v1.0-test'))
    p.add_argument('--num-val-scenes', type=int, default=None)
    p.add_argument('--lidar-azimuths', type=int, default=1084,
                   help='LiDAR firings per revolution (32 beams each)')
    p.add_argument('--objects-scale', type=float, default=1.0,
                   help='multiplies the number of objects per scene')
    p.add_argument('--jpeg-quality', type=int, default=90)
    p.add_argument('--overwrite', action='store_true',
                   help='replace an existing non-empty root')
    p.add_argument('--quiet', action='store_true')
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from fuller.data_prep.synthetic import generate_synthetic_nuscenes
    try:
        summary = generate_synthetic_nuscenes(
            args.root, num_scenes=args.num_scenes,
            keyframes_per_scene=args.keyframes,
            sweeps_per_keyframe=args.sweeps,
            image_size=tuple(args.image_size), seed=args.seed,
            version=args.version, num_val_scenes=args.num_val_scenes,
            lidar_azimuths=args.lidar_azimuths,
            objects_scale=args.objects_scale, jpeg_quality=args.jpeg_quality,
            overwrite=args.overwrite, verbose=not args.quiet)
    except (ValueError, FileExistsError) as err:
        print(f'create_synthetic_nuscenes: error: {err}', file=sys.stderr)
        return 2
    if not args.quiet:
        print(json.dumps(summary, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
