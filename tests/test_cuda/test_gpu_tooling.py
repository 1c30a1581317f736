"""The GPU tooling on CPU: the cuda-marked tests are collected and skipped
with their reason (not silently deselected), the benchmarks' camera rig
projects where pinhole geometry says, the benchmarks run at tiny sizes and
write JSON, and tools/gpu_check.sh fails clearly without its bundle.
(Not marked cuda: these run everywhere.)"""
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from fuller.testing import REPO_ROOT, load_script

BENCH = REPO_ROOT / 'tools' / 'benchmarks'


def _load(path, name):
    return load_script(path, name)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU case')
def test_cuda_tests_are_collected_and_skipped_with_reason():
    proc = subprocess.run(
        [sys.executable, '-m', 'pytest', '-m', 'cuda', '-rs', '-q',
         '-p', 'no:cacheprovider', 'tests/test_cuda'],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    skipped = [line for line in out.splitlines()
               if line.startswith('SKIPPED')]
    # every cuda test of the four files shows up with the stated reason
    assert len(skipped) >= 4, out[-3000:]
    assert all('no CUDA GPU' in line for line in skipped), skipped
    summary = out.strip().splitlines()[-1]
    assert 'skipped' in summary and 'passed' not in summary, summary
    assert 'error' not in summary, summary


def test_nominal_rig_projects_by_pinhole_geometry():
    bench = _load(BENCH / 'bench_view_transform.py', 'bench_vt')
    cam2img, lidar2cam, img_aug = bench.nominal_rig(6, (256, 704))
    # BEVFusion's test crop: 1600 x 900 * 0.48 = 768 x 432 -> centre 704
    # columns, bottom 256 rows
    np.testing.assert_allclose(img_aug[0][:2, 3], [-32., -176.])

    def project(cam):
        """camera point -> img_aug pixel; img_aug acts on (u, v, d, 1)."""
        pix = cam2img[k] @ cam
        uvd1 = np.array([pix[0] / pix[2], pix[1] / pix[2], pix[2], 1.])
        return (img_aug[k] @ uvd1)[:2]

    for k, yaw_deg in enumerate(bench.RIG_YAW_DEG):
        yaw = math.radians(yaw_deg)
        # a point 20 m out along the camera's yaw, at the camera's height
        pos = np.array([bench.RIG_CAM_OFFSET * math.cos(yaw),
                        bench.RIG_CAM_OFFSET * math.sin(yaw),
                        bench.RIG_CAM_Z])
        point = pos + 20 * np.array([math.cos(yaw), math.sin(yaw), 0.])
        cam = lidar2cam[k] @ np.append(point, 1.)
        np.testing.assert_allclose(cam[:3], [0., 0., 20.], atol=1e-9)
        u, v = project(cam)
        assert u == pytest.approx(352.)  # image centre column
        assert v == pytest.approx(490 * 0.48 - 176)  # principal row
        # 1 m to the camera's left (LiDAR +y turned by yaw) is left in the
        # image: smaller u by f * 0.48 / 20
        left = point + np.array([-math.sin(yaw), math.cos(yaw), 0.])
        u, _ = project(lidar2cam[k] @ np.append(left, 1.))
        assert u == pytest.approx(352. - bench.RIG_FOCAL[k] * 0.48 / 20)


def test_view_transform_bench_tiny_cpu_writes_json(tmp_path):
    tool = _load(REPO_ROOT / 'tools' / 'benchmark.py', 'benchmark_tool')
    out = tmp_path / 'vt.json'
    results = tool.main(['--device', 'cpu', '--out', str(out),
                         'view_transform', '--size', 'tiny', '--warmup', '0',
                         '--repeat', '1', '--impl', 'torch'])
    saved = json.loads(out.read_text())
    report = saved['view_transform']
    assert saved['environment']['device'] == 'cpu'
    assert report == json.loads(json.dumps(results['view_transform']))
    assert report['impls'] == ['torch'] and report['device'] == 'cpu'
    # tiny: B=1, N=2, D = ceil((40 - 1) / 8) = 5, 32x64 / 8 = 4 x 8 pixels
    assert report['frustum_points'] == 1 * 2 * 5 * 4 * 8
    assert 0 < report['kept_fraction'] < 1
    for level in ('pool', 'module'):
        assert report['levels'][level]['torch']['time_s'] > 0


@pytest.mark.slow  # two tiny-model train steps and one inference on CPU
def test_full_model_bench_tiny_cpu():
    bench = _load(BENCH / 'bench_full_model.py', 'bench_full')
    report = bench.run('tiny', 'cpu', batches=(1, ), warmup=0, iters=1)
    row = report['train']['batch1']
    assert report['train']['modes'] == ['sum', 'fuller']  # no triton on CPU
    assert row['time_sum_s'] > 0 and row['time_fuller_s'] > 0
    assert row['ratio_fuller_to_sum'] == pytest.approx(
        row['time_fuller_s'] / row['time_sum_s'])
    inf = report['inference_batch1']
    stages = {'preprocess', 'img_backbone', 'img_neck', 'view_transform',
              'pts_voxel_encoder', 'pts_middle_encoder', 'fuser', 'decoder',
              'det_head', 'seg_head', 'other'}
    assert set(inf['share_of_total']) == stages
    assert sum(inf['share_of_total'].values()) == pytest.approx(1.0)
    assert all(v > 0 for k, v in inf['latency_ms'].items() if k != 'other')


def test_gpu_check_fails_clearly_without_bundle(tmp_path):
    root = tmp_path / 'tree'
    (root / 'tools').mkdir(parents=True)
    shutil.copy(REPO_ROOT / 'tools' / 'gpu_check.sh', root / 'tools')
    out = tmp_path / 'out'
    proc = subprocess.run(['bash', str(root / 'tools' / 'gpu_check.sh')],
                          env=dict(os.environ, OUT=str(out)),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert 'tools/gpu_check.sh --prepare' in (out / 'setup.log').read_text()
    rows = (out / 'summary.tsv').read_text().splitlines()
    assert rows[0].split('\t') == ['stage', 'status', 'seconds', 'log']
    assert rows[1].startswith('setup\tfailed (no .gpu)')
