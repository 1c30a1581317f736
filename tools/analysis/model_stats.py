"""Parameters and CPU inference latency of a fuller model, stage by stage.

Shape shorthand: B batch, N cameras (6), H x W network input pixels,
P LiDAR points, M voxels, C channels, Y/X BEV cells.

Usage::

    python tools/analysis/model_stats.py CONFIG [--repeat N] [--batch-size B]
        [--points P] [--threads T] [--json OUT]

On a shared machine use ``--threads 1``: with 2 threads and other jobs on
the cores, every parallel region waits for a descheduled thread and the
timings can grow 40x.

The model is built with the image backbone's ``init_cfg`` removed (no
download), ``init_weights`` run, in eval mode under ``torch.no_grad``. One
batch is generated (:func:`make_sample`): N = 6 nuScenes-like cameras at the
config's image size, P points of a simulated 32-beam LiDAR in the LiDAR
frame. The stages are called in sequence as ``MultiTaskBEVFusion`` calls
them (checked against ``model.extract_feat``); heads are timed through
``predict`` (forward + decoding). Times are medians over ``--repeat`` runs
after one warm-up; the whole ``mode='predict'`` call is timed likewise.
Light heads: the config's heads with FULLER's ``LIGHT_DET`` / ``LIGHT_SEG``
sizes, each capped at the config's own. Markdown goes to stdout; ``--json``
writes the same numbers atomically.
"""
import argparse
import copy
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import fuller  # noqa: E402,F401
from fuller.compat import set_spconv_algo  # noqa: E402
from fuller.utils.io import atomic_open  # noqa: E402
from mmdet3d.registry import MODELS  # noqa: E402
from mmdet3d.structures import (Det3DDataSample,  # noqa: E402
                                LiDARInstance3DBoxes)

LIGHT_DET = dict(hidden_channels=64, num_heads=4, ffn_channels=128,
                 head_conv=32)
LIGHT_SEG = dict(channels=384)
STAGES = ('img_backbone', 'img_neck', 'view_transform',
          'pts_voxel_encoder+pts_middle_encoder', 'fuser', 'decoder',
          'heads.det', 'heads.seg')
DET_HEAD_DEFAULTS = dict(hidden_channels=128, num_heads=8, ffn_channels=256,
                         head_conv=64)  # TransFusionDetHead's defaults
# nuScenes-like ring (yaw of the optical axis from LiDAR +x towards +y, deg;
# position in the LiDAR frame, m): FRONT, FRONT_RIGHT, FRONT_LEFT, BACK,
# BACK_LEFT, BACK_RIGHT
CAMERA_RING = ((0., (1.0, 0.0, -0.3)), (-55., (0.8, -0.5, -0.3)),
               (55., (0.8, 0.5, -0.3)), (180., (-1.0, 0.0, -0.3)),
               (110., (-0.2, 0.5, -0.3)), (-110., (-0.2, -0.5, -0.3)))
ORIG_IMAGE = (900, 1600)  # nuScenes camera (H, W); focal 1266 px
BEAMS_DEG = np.linspace(-30.67, 10.67, 32)  # HDL-32E elevation angles
LIDAR_HEIGHT = 1.84  # m above the ground


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
    g = torch.Generator().manual_seed(seed)
    img = torch.rand((len(cam2img), 3) + image_size, generator=g) * 255
    return dict(points=lidar_points(num_points, pc_range, seed),
                img=img), sample


def default_points(model) -> int:
    """200k (10 nuScenes sweeps) for a config sized for multi-sweep input
    (eval max_voxels >= 100k, as BEVFusion's 160k), else 30k (one sweep)."""
    max_voxels = model.data_preprocessor.voxel_layer.max_voxels
    max_voxels = max_voxels[-1] if isinstance(max_voxels, (list, tuple)) \
        else max_voxels
    return 200_000 if max_voxels >= 100_000 else 30_000


# ------------------------------------------------------------------- model
def build_model(cfg_path: str):
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(cfg_path)
    model_cfg = copy.deepcopy(cfg.model)
    if model_cfg.get('img_backbone') is not None:
        model_cfg.img_backbone.init_cfg = None  # no checkpoint download
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model.eval(), model_cfg


def count(module) -> int:
    return 0 if module is None else sum(p.numel() for p in
                                        module.parameters())


def stage_params(model) -> Dict[str, int]:
    """Parameters per stage; a stage absent from the config counts 0."""
    counts = {}
    for stage in STAGES:
        for name in stage.split('+'):
            try:
                module = model.get_submodule(name)
            except AttributeError:  # not configured (None or no such head)
                module = None
            counts[stage] = counts.get(stage, 0) + count(module)
    other = count(model) - sum(counts.values())
    if other:
        counts['other'] = other
    return counts


def light_head_cfgs(model_cfg) -> Dict[str, dict]:
    """Heavy (config) and light head configs, light capped at heavy."""
    out = {}
    det = model_cfg.get('det_head')
    if det is not None:
        light = copy.deepcopy(det)
        for k, v in LIGHT_DET.items():
            light[k] = min(v, det.get(k, DET_HEAD_DEFAULTS[k]))
        out['det'] = (det, light)
    seg = model_cfg.get('seg_head')
    if seg is not None:
        heavy_ch = seg.get('channels') or seg['in_channels']
        light = copy.deepcopy(seg)
        light['channels'] = min(LIGHT_SEG['channels'], heavy_ch)
        out['seg'] = (seg, light)
    return out


# ------------------------------------------------------------------ timing
def staged_forward(model, batch, timer: Callable):
    """The detector's ``extract_feat`` + heads' ``predict`` as timed
    stages -> (shared BEV map, [camera BEV, LiDAR BEV])."""
    inputs, samples = batch['inputs'], batch['data_samples']
    bevs = []
    if model.with_camera:
        imgs = inputs['imgs']
        B, N = imgs.shape[:2]
        feats = timer('img_backbone', model.img_backbone, imgs.flatten(0, 1))
        feats = timer('img_neck', model.img_neck, feats)
        feats = feats[0] if isinstance(feats, (list, tuple)) else feats
        feats = feats.unflatten(0, (B, N))
        args = [feats] + ([inputs['points']] if getattr(
            model.view_transform, 'uses_points', False) else []) + [
            inputs[k] for k in ('cam2img', 'lidar2cam', 'img_aug_matrix',
                                'lidar_aug_matrix')]
        bevs.append(timer('view_transform', model.view_transform, *args))
    if model.with_lidar:
        vox = inputs['voxels']

        def lidar():
            f = model.pts_voxel_encoder(vox['voxels'], vox['num_points'],
                                        vox['coors'])
            return model.pts_middle_encoder(f, vox['coors'], len(samples))
        bevs.append(timer('pts_voxel_encoder+pts_middle_encoder', lidar))
    fused = timer('fuser', model.fuser, bevs) if model.fuser is not None \
        else bevs[0]
    shared = timer('decoder', model.decoder, fused)
    for task, head in model.heads.items():
        timer(f'heads.{task}', head.predict, shared, samples)
    return shared, bevs


def time_stages(model, data, repeat: int) -> Dict[str, List[float]]:
    """Seconds per stage (and per whole forward) of ``repeat`` runs."""
    runs: Dict[str, List[float]] = {}

    def timer(name, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        runs.setdefault(name, []).append(time.perf_counter() - t0)
        return out

    batch = model.data_preprocessor(copy.deepcopy(data), training=False)
    for i in range(repeat + 1):  # run 0 is the warm-up
        timer('data_preprocessor', model.data_preprocessor,
              copy.deepcopy(data), False)
        timer('voxelisation', model.data_preprocessor.voxelize,
              data['inputs']['points'], data['data_samples'])
        staged_forward(model, batch, timer)
        timer('total forward (mode=predict)', model, batch['inputs'],
              copy.deepcopy(batch['data_samples']), 'predict')
        if i == 0:
            runs = {}
    return runs


def head_settings(task: str, cfg) -> dict:
    if task == 'seg':
        return dict(channels=cfg.get('channels') or cfg['in_channels'])
    return {k: cfg.get(k, DET_HEAD_DEFAULTS[k]) for k in LIGHT_DET}


def head_stats(model, model_cfg, batch, repeat: int) -> dict:
    """Heavy vs light head parameters and predict latency."""
    shared = model.extract_feat(batch['inputs'])
    stats = {}
    for task, cfgs in light_head_cfgs(model_cfg).items():
        row = {}
        for kind, cfg in zip(('heavy', 'light'), cfgs):
            torch.manual_seed(0)
            head = MODELS.build(cfg).eval()
            head.init_weights()
            times = []
            for _ in range(repeat + 1):
                t0 = time.perf_counter()
                head.predict(shared, batch['data_samples'])
                times.append(time.perf_counter() - t0)
            row[kind] = dict(params=count(head),
                             latency_s=statistics.median(times[1:]),
                             settings=head_settings(task, cfg))
        row['saving_pct'] = 100.0 * (1 - row['light']['params'] /
                                     row['heavy']['params'])
        stats[task] = row
    return stats


# ------------------------------------------------------------------ report
def fmt_params(n: int) -> str:
    return f'{n / 1e6:.3f} M' if n >= 1e4 else f'{n:,}'


def stage_table(report: dict) -> List[str]:
    m = report['meta']
    med, best = report['latency_s'], report['latency_min_s']
    lines = [f"### {m['config']}", '',
             f"CPU, torch {m['torch']}, {m['threads']} threads; batch "
             f"{m['batch_size']} x {m['num_cams']} cameras {m['image_size']}"
             f", {m['points']:,} points/sample -> {m['voxels']:,} "
             f"voxels/batch; shared BEV {m['shared_bev']}; {m['repeat']} "
             'runs after 1 warm-up, eval mode, no_grad; data_preprocessor '
             '= image normalisation + padding + voxelisation.', '',
             '| stage | params | CPU latency median (min), ms |',
             '|---|---:|---:|']

    def ms(name):
        return f'{1e3 * med[name]:.0f} ({1e3 * best[name]:.0f})'
    rows = [(n, fmt_params(p)) for n, p in report['params'].items()] + [
        ('data_preprocessor', '0'), ('voxelisation', '0')]
    lines += [f"| {n} | {p} | {ms(n) if n in med else '-'} |"
              for n, p in rows]
    staged = [k for k in report['params'] if k in med]
    return lines + [
        f'| sum of model stages | | {1e3 * sum(med[k] for k in staged):.0f}'
        f' ({1e3 * sum(best[k] for k in staged):.0f}) |',
        f"| **whole model** (forward, mode=predict) | "
        f"**{fmt_params(report['total_params'])}** | "
        f"**{ms('total forward (mode=predict)')}** |"]


def head_table(report: dict) -> List[str]:
    lines = ["FULLER light heads (settings capped at the config's):", '',
             '| head | heavy settings | heavy params | light settings | '
             'light params | saving | heavy / light latency (ms) |',
             '|---|---|---:|---|---:|---:|---:|']
    for task, row in report['heads'].items():
        h, li = row['heavy'], row['light']
        hs, ls = (', '.join(f'{k}={v}' for k, v in d['settings'].items())
                  for d in (h, li))
        lines.append(
            f"| {task} | {hs} | {fmt_params(h['params'])} | "
            f"{ls} | {fmt_params(li['params'])} | "
            f"{row['saving_pct']:.1f} % | {1e3 * h['latency_s']:.0f} / "
            f"{1e3 * li['latency_s']:.0f} |")
    heavy = sum(r['heavy']['params'] for r in report['heads'].values())
    light = sum(r['light']['params'] for r in report['heads'].values())
    total = report['total_params']
    return lines + [
        '', f'Both heads: {fmt_params(heavy)} -> {fmt_params(light)} '
        f'({100 * (1 - light / heavy):.1f} % fewer); whole model '
        f'{fmt_params(total)} -> {fmt_params(total - heavy + light)} '
        f'({100 * (heavy - light) / total:.1f} % fewer).']


def markdown(report: dict) -> str:
    lines = stage_table(report)
    if report['heads']:
        lines += [''] + head_table(report)
    return '\n'.join(lines)


def write_json_atomic(obj: dict, path: str) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('--repeat', type=int, default=5,
                   help='timed runs per stage (median), after 1 warm-up')
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


def measure(args) -> dict:
    model, model_cfg = build_model(args.config)
    points = args.points or default_points(model)
    items = [make_sample(model, points, seed)
             for seed in range(args.batch_size)]
    data = dict(inputs=dict(points=[i[0]['points'] for i in items],
                            img=[i[0]['img'] for i in items]),
                data_samples=[i[1] for i in items])
    if model.with_lidar:  # as the detector does on its first CPU call
        set_spconv_algo(model.pts_middle_encoder, 'cpu')
    with torch.no_grad():
        batch = model.data_preprocessor(copy.deepcopy(data), training=False)
        shared, bevs = staged_forward(model, batch, lambda n, f, *a: f(*a))
        if not torch.allclose(shared, model.extract_feat(batch['inputs']),
                              atol=1e-4, rtol=1e-4):
            raise RuntimeError('model_stats: the staged forward does not '
                               'reproduce model.extract_feat; update '
                               'staged_forward to the detector')
        runs = time_stages(model, data, args.repeat)
        heads = head_stats(model, model_cfg, batch, args.repeat)
    vt = model.view_transform
    meta = dict(config=args.config, torch=torch.__version__,
                threads=torch.get_num_threads(), batch_size=args.batch_size,
                num_cams=len(items[0][0]['img']),
                image_size=list(vt.image_size) if vt is not None else None,
                points=points, voxels=int(len(batch['inputs']['voxels'][
                    'coors'])), repeat=args.repeat,
                shared_bev=list(shared.shape[1:]),
                modality_bev=[list(b.shape[1:]) for b in bevs])
    params = stage_params(model)
    return dict(meta=meta, params=params, total_params=count(model),
                latency_s={k: statistics.median(v) for k, v in runs.items()},
                latency_min_s={k: min(v) for k, v in runs.items()},
                heads=heads)


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


if __name__ == '__main__':
    main()
