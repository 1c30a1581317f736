"""Parameters, output shapes and CPU latency of a fuller detector, timed
stage by stage on its own forward.

Shape shorthand: B batch, N cameras (6), H x W network input pixels,
P LiDAR points, M voxels, C channels, Y/X BEV cells.

Usage::

    python tools/analysis/model_stats.py CONFIG [--mode predict|loss]
        [--repeat N] [--batch-size B] [--points P] [--threads T]
        [--json OUT]

On a shared machine use ``--threads 1``: with 2 threads and other jobs on
the cores, every parallel region waits for a descheduled thread and the
timings can grow 40x.

The detector (``MultiTaskBEVFusion``) is built from the config by
:func:`fuller.testing.build_model_from_config` (seed 0, no ``Pretrained``
weights, so no download; ``init_weights`` run). Its stages are its own
submodules, as built: the direct children (``data_preprocessor``,
``img_backbone``, ``img_neck``, ``view_transform``, ``pts_voxel_encoder``,
``pts_middle_encoder``, ``fuser``, ``decoder``) and each task head
(``heads.det``, ``heads.seg``); a part the config leaves out is absent.
Forward pre/post hooks on them time every call while the detector runs
its normal forward: ``model.test_step`` in eval mode under
``torch.no_grad`` (``--mode predict``), or the data preprocessor plus
``model(..., mode='loss')`` in train mode (``--mode loss``, forward only).
A stage reports its parameters, the shape of its output and its time, the
mean (and min) over ``--repeat`` runs after one warm-up, with its share of
the whole forward timed around the same call. What runs outside every
stage (box decoding, losses, packing results) is reported as such, so the
rows add up to the total. Only stages that ran are listed.

Input: one synthetic batch (:func:`make_sample`): N = 6 nuScenes-like
cameras at the config's image size, P points of a simulated 32-beam LiDAR
in the LiDAR frame, no GT boxes and empty map masks (for ``--mode loss``).
Markdown goes to stdout; ``--json`` writes the same numbers atomically.
"""
import argparse
import copy
import json
import logging
import math
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Dict, List

MODES = dict(predict='model.test_step, eval mode, no_grad',
             loss="data_preprocessor + model(mode='loss'), train mode, "
             'forward only')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--mode', choices=sorted(MODES), default='predict',
                   help='predict: model.test_step (eval, no_grad); loss: '
                   "model(mode='loss') in train mode, forward only")
    p.add_argument('--repeat', type=int, default=5,
                   help='timed runs (mean), after 1 warm-up')
    p.add_argument('--batch-size', type=int, default=1)
    p.add_argument('--points', type=int, default=None,
                   help='LiDAR points per sample (default: 200000 for a '
                   'config with eval max_voxels >= 100k, else 30000)')
    p.add_argument('--threads', type=int, default=None,
                   help='torch CPU threads (default: torch\'s default)')
    p.add_argument('--json', default=None, help='also write JSON here')
    args = p.parse_args(argv)
    if not os.path.isfile(args.config):
        p.error(f'config file {args.config} does not exist')
    if min(args.repeat, args.batch_size, args.points or 1,
           args.threads or 1) < 1:
        p.error('--repeat, --batch-size, --points and --threads must be '
                'positive')
    return args


if __name__ == '__main__':
    parse_args()  # `--help` and argument errors before the imports below (seconds)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402
from torch import nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from fuller.testing import build_model_from_config  # noqa: E402
from fuller.utils.io import atomic_open  # noqa: E402
from mmdet3d.structures import (Det3DDataSample,  # noqa: E402
                                LiDARInstance3DBoxes)

# nuScenes-like ring (yaw of the optical axis from LiDAR +x towards +y, deg;
# position in the LiDAR frame, m): FRONT, FRONT_RIGHT, FRONT_LEFT, BACK,
# BACK_LEFT, BACK_RIGHT
CAMERA_RING = ((0., (1.0, 0.0, -0.3)), (-55., (0.8, -0.5, -0.3)),
               (55., (0.8, 0.5, -0.3)), (180., (-1.0, 0.0, -0.3)),
               (110., (-0.2, 0.5, -0.3)), (-110., (-0.2, -0.5, -0.3)))
ORIG_IMAGE = (900, 1600)  # nuScenes camera (H, W); focal 1266 px
BEAMS_DEG = np.linspace(-30.67, 10.67, 32)  # HDL-32E elevation angles
LIDAR_HEIGHT = 1.84  # m above the ground
OUTSIDE = 'outside the stages'


# ------------------------------------------------------------------- input
def camera_matrices(image_size, num_cams: int = 6):
    """-> cam2img (N, 4, 4) of the 1600x900 camera, lidar2cam (N, 4, 4),
    img_aug_matrix (N, 4, 4): resize so that 704 px come from 768 (as the
    test pipeline's 0.48), crop the bottom rows, centre horizontally."""
    H, W = image_size
    cam2img = np.eye(4)
    cam2img[:3, :3] = [[1266., 0, 800], [0, 1266., 450], [0, 0, 1]]
    scale = W / ORIG_IMAGE[1] * 768 / 704
    aug = np.diag([scale, scale, 1., 1.])
    aug[0, 3] = -(ORIG_IMAGE[1] * scale - W) / 2
    aug[1, 3] = -(ORIG_IMAGE[0] * scale - H)
    # camera (x right, y down, z forward) axes in the LiDAR frame, yaw 0
    cam_axes = np.array([[0., 0, 1], [-1, 0, 0], [0, -1, 0]])
    lidar2cam = []
    for yaw_deg, pos in CAMERA_RING[:num_cams]:
        c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ cam_axes
        cam2lidar = np.eye(4)
        cam2lidar[:3, :3], cam2lidar[:3, 3] = rot, pos
        lidar2cam.append(np.linalg.inv(cam2lidar))
    return (np.stack([cam2img] * num_cams), np.stack(lidar2cam),
            np.stack([aug] * num_cams))


def lidar_points(num_points: int, pc_range, seed: int) -> torch.Tensor:
    """(P, 5) x, y, z, intensity, time_lag: a simulated 32-beam LiDAR.
    Downward beams hit the ground (z = -LIDAR_HEIGHT) unless an obstacle
    stops them first; upward beams hit walls 5-60 m away; 10 sweeps spread
    the time lags over 0-0.45 s. Only points inside ``pc_range`` are kept."""
    rng = np.random.default_rng(seed)
    out, have = [], 0
    while have < num_points:
        n = 2 * (num_points - have) + 1000
        elev = np.radians(rng.choice(BEAMS_DEG, n))
        azim = rng.uniform(-np.pi, np.pi, n)
        ground = np.where(elev < 0, LIDAR_HEIGHT / np.tan(-np.minimum(
            elev, -1e-3)), np.inf)
        obstacle = rng.uniform(2., 60., n)
        hit_obstacle = (rng.random(n) < 0.35) | (elev >= 0)
        r = np.where(hit_obstacle, np.minimum(obstacle, ground), ground)
        r = r + rng.normal(0., 0.02, n)
        xyz = np.stack([r * np.cos(azim), r * np.sin(azim),
                        np.maximum(r * np.tan(elev), -LIDAR_HEIGHT)], 1)
        keep = np.all((xyz >= pc_range[:3]) & (xyz < pc_range[3:]), 1)
        xyz = xyz[keep]
        feats = np.stack([rng.uniform(0, 255, len(xyz)),
                          rng.integers(0, 10, len(xyz)) * 0.05], 1)
        out.append(np.concatenate([xyz, feats], 1))
        have += len(xyz)
    return torch.from_numpy(np.concatenate(out)[:num_points]).float()


def make_sample(model, num_points: int, seed: int):
    """-> (inputs dict(points, img), Det3DDataSample) for one frame."""
    vt = model.view_transform
    image_size = tuple(vt.image_size) if vt is not None else (256, 704)
    cam2img, lidar2cam, aug = camera_matrices(image_size)
    pc_range = np.asarray(
        model.data_preprocessor.voxel_layer.point_cloud_range)
    sample = Det3DDataSample()
    sample.set_metainfo(dict(
        cam2img=cam2img, lidar2cam=lidar2cam, img_aug_matrix=aug,
        lidar_aug_matrix=np.eye(4), token=f'model-stats-{seed}',
        box_type_3d=LiDARInstance3DBoxes))
    add_empty_ground_truth(model, sample)
    g = torch.Generator().manual_seed(seed)
    img = torch.rand((len(cam2img), 3) + image_size, generator=g) * 255
    return dict(points=lidar_points(num_points, pc_range, seed),
                img=img), sample


def add_empty_ground_truth(model, sample) -> None:
    """No boxes, and all-empty masks on the seg head's map grid, so that
    ``mode='loss'`` runs on the synthetic frame."""
    gt = InstanceData()
    gt.bboxes_3d = LiDARInstance3DBoxes(torch.zeros(0, 9), box_dim=9)
    gt.labels_3d = torch.zeros(0, dtype=torch.long)
    sample.gt_instances_3d = gt
    if 'seg' in model.heads:
        seg = model.heads['seg']
        sample.gt_masks_bev = torch.zeros(
            (len(seg.classes), ) + tuple(seg.map_grid.shape),
            dtype=torch.bool)


def default_points(model) -> int:
    """200k (10 nuScenes sweeps) for a config sized for multi-sweep input
    (eval max_voxels >= 100k, as BEVFusion's 160k), else 30k (one sweep)."""
    max_voxels = model.data_preprocessor.voxel_layer.max_voxels
    max_voxels = max_voxels[-1] if isinstance(max_voxels, (list, tuple)) \
        else max_voxels
    return 200_000 if max_voxels >= 100_000 else 30_000


def make_data(model, batch_size: int, num_points: int) -> dict:
    """-> dict(inputs=dict(points, img), data_samples) of ``batch_size``
    frames (seeds 0, 1, ...), as a data loader collates them."""
    items = [make_sample(model, num_points, seed)
             for seed in range(batch_size)]
    return dict(inputs=dict(points=[i[0]['points'] for i in items],
                            img=[i[0]['img'] for i in items]),
                data_samples=[i[1] for i in items])


# ------------------------------------------------------------------ stages
def stage_modules(model: nn.Module) -> Dict[str, nn.Module]:
    """The detector's named stages: its direct submodules, a ModuleDict
    (the task heads) expanded to ``<name>.<key>``."""
    stages = {}
    for name, child in model.named_children():
        if isinstance(child, nn.ModuleDict):
            stages.update({f'{name}.{key}': module
                           for key, module in child.items()})
        else:
            stages[name] = child
    return stages


def shape_of(out):
    """Output structure with each tensor as its shape, e.g. '1x64x90x90';
    lists and dicts nest, anything else is its type name."""
    if isinstance(out, torch.Tensor):
        return 'x'.join(map(str, out.shape)) or 'scalar'
    if isinstance(out, (list, tuple)):
        return [shape_of(o) for o in out]
    if isinstance(out, dict):
        return {str(k): shape_of(v) for k, v in out.items()}
    return type(out).__name__


class StageRecorder:
    """Forward pre/post hooks on named modules: seconds (summed over the
    calls of one run, in the order the stages first ran) and the output
    structure of the last call. Use as a context manager; ``reset()``
    before each run."""

    def __init__(self, stages: Dict[str, nn.Module]) -> None:
        self.stages = stages
        self.seconds: Dict[str, float] = {}
        self.shapes: Dict[str, object] = {}
        self._started: Dict[str, List[float]] = {}
        self._handles = []

    def reset(self) -> None:
        self.seconds = {}
        self._started = {}

    def _pre(self, name, module, args) -> None:
        self._started.setdefault(name, []).append(time.perf_counter())

    def _post(self, name, module, args, output) -> None:
        elapsed = time.perf_counter() - self._started[name].pop()
        self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
        self.shapes[name] = shape_of(output)

    def __enter__(self) -> 'StageRecorder':
        for name, module in self.stages.items():
            self._handles += [
                module.register_forward_pre_hook(partial(self._pre, name)),
                module.register_forward_hook(partial(self._post, name))]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def run_forward(model, data: dict, mode: str):
    """The detector's own forward on a collated batch ``data``."""
    if mode == 'predict':
        with torch.no_grad():
            return model.test_step(data)
    batch = model.data_preprocessor(data, True)
    return model(**batch, mode='loss')


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def profile(model, data: dict, repeat: int, mode: str = 'predict') -> dict:
    """Time ``repeat`` forwards of ``model`` on ``data`` after one warm-up.

    Returns dict(stages={name: dict(module, params, output_shape, time_s,
    time_min_s, share)} for the stages that ran, in the order they ran;
    outside=dict(time_s, share), the rest of the forward; total=dict(params,
    time_s, time_min_s); idle_params={name: params} of the stages that did
    not run and of parameters outside every stage). Times are means.
    """
    model.train(mode == 'loss')
    stages = stage_modules(model)
    runs, totals = [], []
    with StageRecorder(stages) as recorder:
        for i in range(repeat + 1):  # run 0 is the warm-up
            step_data = copy.deepcopy(data)
            recorder.reset()
            start = time.perf_counter()
            run_forward(model, step_data, mode)
            totals.append(time.perf_counter() - start)
            runs.append(recorder.seconds)
    runs, totals = runs[1:], totals[1:]
    total = sum(totals) / len(totals)
    ran = list(dict.fromkeys(name for run in runs for name in run))
    rows = {}
    for name in ran:
        times = [run.get(name, 0.0) for run in runs]
        mean = sum(times) / len(times)
        rows[name] = dict(module=type(stages[name]).__name__,
                          params=count(stages[name]),
                          output_shape=recorder.shapes[name], time_s=mean,
                          time_min_s=min(times), share=mean / total)
    outside = total - sum(r['time_s'] for r in rows.values())
    idle = {n: count(m) for n, m in stages.items() if n not in rows}
    rest = count(model) - sum(count(m) for m in stages.values())
    if rest:
        idle[OUTSIDE] = rest
    return dict(stages=rows, outside=dict(time_s=outside,
                                          share=outside / total),
                total=dict(params=count(model), time_s=total,
                           time_min_s=min(totals)),
                idle_params=idle)


# ------------------------------------------------------------------ report
def fmt_params(n: int) -> str:
    return f'{n / 1e6:.3f} M' if n >= 1e4 else f'{n:,}'


def fmt_shape(shape, limit: int = 60) -> str:
    text = json.dumps(shape, separators=(', ', ': ')).replace('"', '')
    return text if len(text) <= limit else text[:limit - 3] + '...'


def markdown(report: dict) -> str:
    m, total = report['meta'], report['total']
    lines = [f"### {m['config']}", '',
             f"CPU, torch {m['torch']}, {m['threads']} threads; batch "
             f"{m['batch_size']} x {m['num_cams']} cameras {m['image_size']}"
             f", {m['points']:,} points/sample -> {m['voxels']:,} "
             f"voxels/batch; {m['forward']}; mean (min) of {m['repeat']} "
             'runs after 1 warm-up. Stages are the detector\'s own '
             'submodules, timed by forward hooks.', '',
             '| stage | module | params | output shape | time, ms | '
             'share |', '|---|---|---:|---|---:|---:|']

    def ms(row):
        return f"{1e3 * row['time_s']:.0f} ({1e3 * row['time_min_s']:.0f})"
    for name, row in report['stages'].items():
        lines.append(
            f"| {name} | {row['module']} | {fmt_params(row['params'])} | "
            f"{fmt_shape(row['output_shape'])} | {ms(row)} | "
            f"{100 * row['share']:.1f} % |")
    out = report['outside']
    lines += [
        f"| {OUTSIDE} (decoding, losses, glue) | | | | "
        f"{1e3 * out['time_s']:.0f} | {100 * out['share']:.1f} % |",
        f"| **whole forward** | | **{fmt_params(total['params'])}** | | "
        f'**{ms(total)}** | 100 % |']
    if report['idle_params']:
        lines += ['', 'Parameters not run in this mode: ' + ', '.join(
            f'{n} {fmt_params(p)}' for n, p in
            report['idle_params'].items()) + '.']
    return '\n'.join(lines)


def write_json_atomic(obj: dict, path: str) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2)


def measure(args) -> dict:
    model = build_model_from_config(args.config)
    points = args.points or default_points(model)
    data = make_data(model, args.batch_size, points)
    with torch.no_grad():
        inputs = model.data_preprocessor(copy.deepcopy(data),
                                         args.mode == 'loss')['inputs']
    report = profile(model, data, args.repeat, args.mode)
    vt = model.view_transform
    voxels = inputs.get('voxels')
    report['meta'] = dict(
        config=args.config, torch=torch.__version__,
        threads=torch.get_num_threads(), mode=args.mode,
        forward=MODES[args.mode], batch_size=args.batch_size,
        num_cams=len(data['inputs']['img'][0]),
        image_size=list(vt.image_size) if vt is not None else None,
        points=points,
        voxels=0 if voxels is None else int(len(voxels['coors'])),
        repeat=args.repeat)
    return report


def main(argv=None):
    args = parse_args(argv)
    # init_weights logs every parameter at INFO
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = measure(args)
    if args.json:
        write_json_atomic(report, args.json)
    print(markdown(report))
    return report


if __name__ == '__main__':
    main()
