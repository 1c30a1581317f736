"""Map masks: load from the packed cache vs rasterise on the fly.

Both are timed in the same run on the same samples; the result is the
samples/s of each and their ratio (cache / on-the-fly). On-the-fly is
``rasterise_sample_masks`` (equal to the devkit's ``get_map_mask``; records
found through an STRtree index), timed with the maps already loaded and
indexed (the per-worker state a loader would keep), so the ratio is the
per-sample cost only. Without ``--root`` a small dataset is generated with
``fuller.data_prep.synthetic``.

Usage::

    python tools/benchmarks/bench_map_masks.py [--root DATAROOT --version V]
        [--num-scenes 2] [--keyframes 10] [--repeats 3]
"""
import argparse
import json
import os.path as osp
import pickle
import tempfile
import time
from typing import List, Optional


def _time_per_sample(fn, items, repeats: int) -> float:
    """Best-of-``repeats`` samples/s of ``fn`` over ``items``."""
    best = float('inf')
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return len(items) / max(best, 1e-9)


def run(root: Optional[str] = None, version: str = 'v1.0-mini',
        num_scenes: int = 2, keyframes: int = 10, repeats: int = 3,
        work_dir: Optional[str] = None) -> dict:
    """Measure cache load vs on-the-fly rasterisation; returns a dict."""
    from fuller.data_prep import bev_map_masks as bmm
    from fuller.data_prep.nuscenes_infos import create_nuscenes_data
    from fuller.datasets.map_mask_io import load_map_masks
    tmp = None
    if work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix='bench_map_masks_')
        work_dir = tmp.name
    try:
        if root is None:
            from fuller.data_prep.synthetic import generate_synthetic_nuscenes
            root = osp.join(work_dir, 'nuscenes')
            generate_synthetic_nuscenes(  # masks need no images or rays
                root, num_scenes=num_scenes, keyframes_per_scene=keyframes,
                image_size=(160, 90), lidar_azimuths=90)
        out_dir = osp.join(work_dir, 'out')
        paths = create_nuscenes_data(root, out_dir, version, progress=False)
        infos = []
        for path in paths.values():
            with open(path, 'rb') as f:
                infos.extend(pickle.load(f)['data_list'])
        maps = bmm.NuScenesMapCache(root)
        for info in infos:  # load + index every map before timing
            bmm.map_geometry_index(maps(info['location']))
        files = [osp.join(out_dir, i['map_mask_path']) for i in infos]
        cache = _time_per_sample(load_map_masks, files, repeats)
        fly = _time_per_sample(lambda i: bmm.masks_for_info(maps, i), infos,
                               repeats)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return dict(samples=len(infos), grid=list(bmm.MAP_GRID.shape),
                cache_samples_per_s=cache, onthefly_samples_per_s=fly,
                ratio_cache_over_onthefly=cache / fly)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--root', default=None)
    parser.add_argument('--version', default='v1.0-mini')
    parser.add_argument('--num-scenes', type=int, default=2)
    parser.add_argument('--keyframes', type=int, default=10)
    parser.add_argument('--repeats', type=int, default=3)
    args = parser.parse_args(argv)
    result = run(args.root, args.version, args.num_scenes, args.keyframes,
                 args.repeats)
    print(json.dumps(result, indent=2))


if __name__ == '__main__':
    main()
