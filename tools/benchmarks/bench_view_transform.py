"""The LSS view transform with the fused Triton pool against the pure-torch
pool, in the same run: time and peak memory, forward+backward.

Shape shorthand: B batch, N cameras, C_in image-feature channels, C context
channels, D depth bins, fH x fW feature pixels, Z/Y/X pooling cells.

Sizes (``--size bevfusion``, the default on CUDA; 'small' on CPU):
BEVFusion's camera branch as in configs/_base_/models/bevfusion_multitask.py
and the issue's anchor figures:
256 x 704 input, stride 8 (fH x fW = 32 x 88), depth 1-60 m by 0.5 m
(D = 118), 0.3 m cells on +-54 m (Y = X = 360), C_in = 256, C = 80, six
cameras, batch 4, downsample 2.

Camera geometry: by default a nominal nuScenes rig (six cameras at the
nuScenes yaws 0, -55, 55, 180, 110, -110 deg, 0.3 m below the LiDAR, focal
length 1260 px (810 px for the back camera) on 1600 x 900 images, resized by
0.48 and cropped to 704 x 256 as BEVFusion's test pipeline does). With
``--info PKL`` the cameras of the first keyframe of an mmdet3d v2 info file
(e.g. ../shared/nuscenes-real/infos/sample_a_infos_v2.pkl) are used instead.

Two levels are measured, each for ``bev_pool_impl`` 'torch' (materialised
frustum features + ``bev_pool``) and 'triton' (``bev_pool_triton``):

``pool``   ``lift_splat`` alone: depth softmax, cell computation ("rank
           computation") and pooling, forward + backward from a fixed
           depth-net output and geometry;
``module`` the whole ``LSSViewTransform`` forward + backward (depth net,
           geometry, pool, downsampling convs).

Time: fastest of ``--repeat`` interleaved calls (CUDA synchronised). Peak
memory: ``torch.cuda.max_memory_allocated`` during the call minus the memory
allocated before it (inputs held by both), CUDA only. Ratios torch/triton
(> 1: the Triton pool is faster / smaller) and the largest output and
gradient differences are reported; results go to ``--out`` as JSON.

The Triton pool needs CUDA; on CPU (``--device cpu``) only the torch
pool is timed unless TRITON_INTERPRET=1 (then use ``--size tiny``).

Usage::

    python tools/benchmark.py --device cuda view_transform
    python tools/benchmarks/bench_view_transform.py --device cuda --out vt.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Optional, Sequence

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: --help stays fast
    import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SIZES = {
    'bevfusion': dict(batch=4, cams=6, in_channels=256, out_channels=80,
                      image_size=(256, 704), stride=8,
                      dbound=(1.0, 60.0, 0.5), half_extent=54.0, cell=0.3,
                      downsample=2),
    'small': dict(batch=2, cams=6, in_channels=64, out_channels=40,
                  image_size=(128, 352), stride=8, dbound=(1.0, 60.0, 1.0),
                  half_extent=54.0, cell=0.6, downsample=2),
    'tiny': dict(batch=1, cams=2, in_channels=8, out_channels=6,
                 image_size=(32, 64), stride=8, dbound=(1.0, 40.0, 8.0),
                 half_extent=20.0, cell=4.0, downsample=1),
}
# nuScenes camera yaws (deg, counter-clockwise from the LiDAR x axis) and
# focal lengths (px at 1600 x 900), rounded from the published calibration
RIG_YAW_DEG = (0.0, -55.0, 55.0, 180.0, 110.0, -110.0)
RIG_FOCAL = (1260.0, 1260.0, 1260.0, 810.0, 1260.0, 1260.0)
RIG_IMAGE_WH = (1600.0, 900.0)
RIG_CAM_Z = -0.3  # metres, camera below the LiDAR
RIG_CAM_OFFSET = 0.5  # metres, camera ahead of the LiDAR along its yaw
BEVFUSION_RESIZE = 0.48  # 1600 x 900 -> 768 x 432, then crop to 704 x 256


def nominal_rig(cams: int, image_size: Sequence[int]):
    """(N, 4, 4) cam2img, lidar2cam and img_aug of the nominal rig."""
    img_h, img_w = image_size
    resize = BEVFUSION_RESIZE * img_w / 704.0
    crop_x = (RIG_IMAGE_WH[0] * resize - img_w) / 2
    crop_y = RIG_IMAGE_WH[1] * resize - img_h  # keep the bottom rows
    cam2img, lidar2cam = [], []
    for k in range(cams):
        yaw = math.radians(RIG_YAW_DEG[k % len(RIG_YAW_DEG)])
        f = RIG_FOCAL[k % len(RIG_FOCAL)]
        intr = np.eye(4)
        intr[:3, :3] = [[f, 0, RIG_IMAGE_WH[0] / 2], [0, f, 490.0],
                        [0, 0, 1]]
        cam2img.append(intr)
        c, s = math.cos(yaw), math.sin(yaw)
        # camera x right, y down, z forward, written in the LiDAR frame
        rot = np.array([[s, -c, 0.], [0., 0., -1.], [c, s, 0.]])
        pos = np.array([RIG_CAM_OFFSET * c, RIG_CAM_OFFSET * s, RIG_CAM_Z])
        ext = np.eye(4)
        ext[:3, :3], ext[:3, 3] = rot, -rot @ pos
        lidar2cam.append(ext)
    aug = np.diag([resize, resize, 1.0, 1.0])
    aug[0, 3], aug[1, 3] = -crop_x, -crop_y
    return (np.stack(cam2img), np.stack(lidar2cam),
            np.stack([aug] * cams))


def info_rig(path: str, cams: int, image_size: Sequence[int]):
    """The cameras of the first keyframe of an mmdet3d v2 info pickle."""
    with open(path, 'rb') as f:
        infos = pickle.load(f)
    try:
        images = infos['data_list'][0]['images']
    except (KeyError, IndexError, TypeError) as exc:
        raise SystemExit(f'{path}: not an mmdet3d v2 info file with '
                         f"data_list[0]['images'] ({exc!r})")
    names = sorted(images)[:cams]
    if len(names) < cams:
        raise SystemExit(f'{path}: the keyframe has {len(names)} cameras, '
                         f'{cams} needed')
    _, _, aug = nominal_rig(cams, image_size)
    cam2img = []
    for name in names:
        intr = np.eye(4)
        intr[:3, :3] = np.asarray(images[name]['cam2img'])[:3, :3]
        cam2img.append(intr)
    lidar2cam = np.stack([np.asarray(images[n]['lidar2cam']) for n in names])
    return np.stack(cam2img), lidar2cam, aug


def build(size: dict, impl: str, device: torch.device, seed: int = 0):
    import torch
    from fuller.models.view_transforms import LSSViewTransform
    img_h, img_w = size['image_size']
    ext, cell = size['half_extent'], size['cell']
    torch.manual_seed(seed)
    vt = LSSViewTransform(
        in_channels=size['in_channels'], out_channels=size['out_channels'],
        image_size=(img_h, img_w),
        feature_size=(img_h // size['stride'], img_w // size['stride']),
        dbound=size['dbound'], xbound=(-ext, ext, cell),
        ybound=(-ext, ext, cell), zbound=(-10.0, 10.0, 20.0),
        downsample=size['downsample'], bev_pool_impl=impl)
    return vt.to(device).train()


def _sync(device: torch.device) -> None:
    import torch
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def measure(fns: Dict[str, Callable[[], object]], device: torch.device,
            warmup: int, repeat: int) -> Dict[str, dict]:
    """Fastest time and (CUDA) peak extra memory of each function; calls
    interleaved so that outside load hits every contender alike."""
    import torch
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    out = {name: dict(time_s=math.inf, peak_mib=None) for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            if device.type == 'cuda':
                torch.cuda.empty_cache()
                base = torch.cuda.memory_allocated(device)
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            elapsed = time.perf_counter() - start
            out[name]['time_s'] = min(out[name]['time_s'], elapsed)
            if device.type == 'cuda':
                peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
                out[name]['peak_mib'] = peak
    return out


def run(size_name: Optional[str] = None, device: Optional[str] = None,
        info: Optional[str] = None, warmup: int = 2, repeat: int = 5,
        impls: Optional[Sequence[str]] = None) -> dict:
    """Measure both pools at ``size_name``; returns the JSON report."""
    import torch

    from fuller.models.view_transforms import triton_available
    dev = torch.device(device or ('cuda' if torch.cuda.is_available()
                                  else 'cpu'))
    if size_name is None:  # as bench_bev_pool: full size on a GPU only
        size_name = 'bevfusion' if dev.type == 'cuda' else 'small'
    size = SIZES[size_name]
    if impls is None:
        can_triton = triton_available() and (
            dev.type == 'cuda' or os.environ.get('TRITON_INTERPRET') == '1')
        impls = ('torch', 'triton') if can_triton else ('torch', )
    img_h, img_w = size['image_size']
    feat_hw = (img_h // size['stride'], img_w // size['stride'])
    rig = (info_rig(info, size['cams'], size['image_size']) if info else
           nominal_rig(size['cams'], size['image_size']))
    batch, cams = size['batch'], size['cams']
    mats = [torch.as_tensor(m, dtype=torch.float32).expand(
        batch, cams, 4, 4).contiguous().to(dev) for m in rig]
    lidar_aug = torch.eye(4).expand(batch, 4, 4).contiguous().to(dev)
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(batch, cams, size['in_channels'], *feat_hw,
                        generator=gen).to(dev)
    models = {impl: build(size, impl, dev) for impl in impls}
    ref = models[impls[0]]
    for m in models.values():
        m.load_state_dict(ref.state_dict())
    num_d = ref.depth_bins
    net_out = torch.randn(batch * cams, num_d + size['out_channels'],
                          *feat_hw, generator=gen).to(dev)
    with torch.no_grad():
        geom = ref.get_geometry(*mats, lidar_aug)
        cells = ref.frustum_cells(geom)
    num_cells = batch * math.prod(ref.grid_shape)
    kept = float((cells < num_cells).float().mean())
    grad_pool = torch.randn(batch, ref.grid_shape[0] * size['out_channels'],
                            *ref.grid_shape[1:], generator=gen).to(dev)

    def pool_fn(model):
        def fn():
            x = net_out.detach().requires_grad_(True)
            model.lift_splat(x, geom).backward(grad_pool)
            return x.grad
        return fn

    def module_fn(model):
        def fn():
            x = feats.detach().requires_grad_(True)
            model(x, *mats, lidar_aug).square().mean().backward()
            model.zero_grad(set_to_none=True)
            return x.grad
        return fn

    report = dict(
        benchmark='view_transform', size=size_name, device=str(dev),
        device_name=(torch.cuda.get_device_name(dev) if dev.type == 'cuda'
                     else 'cpu'),
        torch=torch.__version__, cuda=torch.version.cuda,
        geometry=info or 'nominal nuScenes rig', batch=batch, cams=cams,
        depth_bins=num_d, feature_hw=list(feat_hw),
        channels=size['out_channels'], grid_zyx=list(ref.grid_shape),
        frustum_points=int(cells.numel()), kept_fraction=kept,
        impls=list(impls), levels={})
    # agreement: outputs and input gradients of both levels
    if len(impls) == 2:
        diffs = {}
        for level, make in (('pool', pool_fn), ('module', module_fn)):
            outs = []
            for impl in impls:
                x = (net_out if level == 'pool' else feats).detach()
                x.requires_grad_(True)
                m = models[impl]
                y = (m.lift_splat(x, geom) if level == 'pool' else
                     m(x, *mats, lidar_aug))
                (y * grad_pool if level == 'pool' else y.square()).mean(
                ).backward()
                m.zero_grad(set_to_none=True)
                outs.append((y.detach(), x.grad))
            diffs[level] = dict(
                max_abs_out_diff=float((outs[0][0] - outs[1][0]).abs().max()),
                max_abs_out=float(outs[0][0].abs().max()),
                max_abs_grad_diff=float((outs[0][1] - outs[1][1]).abs().max()),
                max_abs_grad=float(outs[0][1].abs().max()))
            del outs
        report['agreement'] = diffs
    for level, make in (('pool', pool_fn), ('module', module_fn)):
        res = measure({impl: make(models[impl]) for impl in impls}, dev,
                      warmup, repeat)
        entry = {impl: res[impl] for impl in impls}
        if len(impls) == 2:
            entry['speedup_torch_over_triton'] = (res['torch']['time_s'] /
                                                  res['triton']['time_s'])
            if dev.type == 'cuda':
                entry['memory_ratio_torch_over_triton'] = (
                    res['torch']['peak_mib'] /
                    max(res['triton']['peak_mib'], 1e-6))
        report['levels'][level] = entry
    return report


def print_report(report: dict) -> None:
    print(f"view_transform {report['size']} on {report['device_name']} "
          f"(torch {report['torch']}, CUDA {report['cuda']}): B="
          f"{report['batch']} N={report['cams']} D={report['depth_bins']} "
          f"{report['feature_hw']} C={report['channels']} grid "
          f"{report['grid_zyx']}, {report['kept_fraction']:.0%} of "
          f"{report['frustum_points']} frustum points in the grid")
    for level, entry in report['levels'].items():
        parts = [f'{impl} {1e3 * entry[impl]["time_s"]:.2f} ms' +
                 (f' / {entry[impl]["peak_mib"]:.0f} MiB'
                  if entry[impl]['peak_mib'] is not None else '')
                 for impl in report['impls']]
        ratios = [f'{k} {v:.2f}' for k, v in entry.items()
                  if k.endswith('triton')]
        print(f'  {level:>6} fwd+bwd: ' + ', '.join(parts + ratios))
    for level, d in report.get('agreement', {}).items():
        print(f'  {level:>6} max|diff| out {d["max_abs_out_diff"]:.1e} '
              f'(of {d["max_abs_out"]:.1e}), grad '
              f'{d["max_abs_grad_diff"]:.1e} (of {d["max_abs_grad"]:.1e})')


def write_json(report: dict, path: str) -> None:
    from fuller.utils.io import atomic_open
    with atomic_open(path, 'w') as f:
        json.dump(report, f, indent=2)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--size', choices=sorted(SIZES),
                        help="default: 'bevfusion' on CUDA, 'small' on CPU")
    parser.add_argument('--device', help='cpu, cuda, cuda:1 ... (default: '
                        'cuda if available)')
    parser.add_argument('--info', help='mmdet3d v2 info pickle: use its '
                        'first keyframe\'s cameras instead of the nominal rig')
    parser.add_argument('--impl', nargs='+', choices=['torch', 'triton'],
                        help='default: both where triton can run')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--out', help='write the report here as JSON')
    args = parser.parse_args(argv)
    report = run(args.size, args.device, args.info, args.warmup, args.repeat,
                 args.impl)
    print_report(report)
    if args.out:
        write_json(report, args.out)
    return report


if __name__ == '__main__':
    main()
