#!/usr/bin/env bash
# One prepared run of fuller's CUDA path on a GPU machine without network (issue #17).
#
# On the development machine, once (fills the git-ignored .gpu/: ../shared/gpu/prepare-carry.sh's bundle,
# plus pytest's wheels in .gpu/extra/ in case the GPU machine lacks pytest):
#     bash tools/gpu_check.sh --prepare
# On the GPU machine, from the project root, with .gpu/ carried beside the tree:
#     OUT=/some/folder bash tools/gpu_check.sh          # $OUT defaults to ./gpu_out
# (with the device tool: command 'bash tools/gpu_check.sh', carry ['.gpu'], timeout_s 540; $OUT is set there)
#
# Stages, most important first, each with its own log and exit status in $OUT/summary.tsv, each capped by
# what is left of GPU_CHECK_BUDGET_S (default 460 s from the script's start) so that one slow stage cannot eat the
# rest; a failed stage does not stop the later ones (only a failed setup does):
#   setup       source .gpu/setup.sh (installs the bundle, builds mmcv's CUDA ops: ~4 min)
#   env         GPU, driver, python/torch/CUDA/numpy/triton versions, which imports work
#   numpy2      mmdet3d 1.4 under numpy 2: registry, box/points structures, ops, transforms fuller uses
#   cuda_tests  python3 -m pytest -m cuda tests/test_cuda   (junit XML too; fails if torch sees no GPU)
#   bench_vt    view transform, Triton vs torch pool, BEVFusion sizes at batch 4 (JSON)
#   bench_full  full-size FULLER model: train step batch 1 and 4, inference per stage (JSON)
#   cpu_subset  a few CPU test files under numpy 2 (mmdet3d datasets/heads paths), time permitting
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [ "${1:-}" = "--prepare" ]; then
  set -e
  [ -f .gpu/setup.sh ] || bash ../shared/gpu/prepare-carry.sh
  mkdir -p .gpu/extra
  python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .gpu/extra "pytest>=8,<9"   # 5 wheels, 1.8 MB
  du -sh .gpu .gpu/extra
  echo "carry .gpu with the tree; on the GPU machine: OUT=\$OUT bash tools/gpu_check.sh"
  exit 0
fi

OUT=${OUT:-$ROOT/gpu_out}
mkdir -p "$OUT"
BUDGET=${GPU_CHECK_BUDGET_S:-460}
T0=$(date +%s)
SUMMARY=$OUT/summary.tsv
printf 'stage\tstatus\tseconds\tlog\n' > "$SUMMARY"
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore MPLBACKEND=Agg

left() { echo $(( BUDGET - ($(date +%s) - T0) )); }

# stage NAME MAX_SECONDS CMD...: run CMD under a timeout, log to $OUT/NAME.log, record the status
stage() {
  local name=$1 cap=$2; shift 2
  local rem; rem=$(left)
  local lim=$(( cap < rem ? cap : rem ))
  local start; start=$(date +%s)
  if [ "$lim" -lt 10 ]; then
    printf '%s\tskipped (budget spent)\t0\t-\n' "$name" >> "$SUMMARY"
    echo "[gpu_check] $name: skipped, budget spent"
    return 0
  fi
  echo "[gpu_check] $name (<= ${lim}s) ..."
  timeout -k 10 "$lim" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local status=ok
  [ $rc -eq 0 ] || status="failed rc=$rc"
  [ $rc -eq 124 ] && status="timed out after ${lim}s"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - start ))" "$name.log" >> "$SUMMARY"
  echo "[gpu_check] $name: $status"
  tail -5 "$OUT/$name.log"
  return 0
}

# ---- setup (sourced: it exports PYTHONPATH for the later stages)
start=$(date +%s)
if [ ! -f .gpu/setup.sh ]; then
  echo ".gpu/setup.sh missing: run 'bash tools/gpu_check.sh --prepare' on the development machine and carry .gpu" \
    | tee "$OUT/setup.log"
  printf 'setup\tfailed (no .gpu)\t0\tsetup.log\n' >> "$SUMMARY"
  exit 1
fi
# shellcheck disable=SC1091
source .gpu/setup.sh > "$OUT/setup.log" 2>&1
rc=$?
cp /tmp/gpu-mmcv/build.log "$OUT/mmcv_build.log" 2>/dev/null || true
if ! python3 -c "import pytest" 2>/dev/null && ls .gpu/extra/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/gpu-site .gpu/extra/*.whl >> "$OUT/setup.log" 2>&1
fi
if [ $rc -ne 0 ]; then
  why="setup.sh rc=$rc"
elif ! python3 -c "import mmcv.ops, mmdet3d, spconv.pytorch" >> "$OUT/setup.log" 2>&1; then
  why="import mmcv.ops, mmdet3d, spconv.pytorch failed"
fi
if [ -n "${why:-}" ]; then
  printf 'setup\tfailed (%s)\t%s\tsetup.log\n' "$why" "$(( $(date +%s) - start ))" >> "$SUMMARY"
  tail -30 "$OUT/setup.log"
  exit 1
fi
printf 'setup\tok\t%s\tsetup.log\n' "$(( $(date +%s) - start ))" >> "$SUMMARY"
echo "[gpu_check] setup ok in $(( $(date +%s) - start )) s"

# ---- env: versions and which imports work
stage env 60 python3 - <<'PY'
import importlib, platform, subprocess
import torch
print('python', platform.python_version())
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f'gpu{i}', p.name, f'{p.total_memory / 2**30:.0f} GiB', f'sm_{p.major}{p.minor}')
for name in ('numpy', 'triton', 'mmengine', 'mmcv', 'mmdet', 'mmdet3d', 'spconv', 'cumm', 'nuscenes',
             'scipy', 'cv2', 'shapely', 'pyquaternion', 'matplotlib', 'tqdm', 'pytest', 'fuller'):
    try:
        mod = importlib.import_module(name)
        print(f'import {name}: ok', getattr(mod, '__version__', ''))
    except Exception as exc:  # report, do not stop
        print(f'import {name}: FAILED {exc!r}')
try:
    print(subprocess.run(['nvidia-smi'], capture_output=True, text=True).stdout)
except OSError as exc:
    print('nvidia-smi:', exc)
PY

# ---- mmdet3d 1.4 under numpy 2: the modules and ops fuller uses
stage numpy2 90 python3 - <<'PY'
import numpy as np
import torch
print('numpy', np.__version__)
from mmdet3d.utils import register_all_modules
register_all_modules(init_default_scope=True)
import fuller  # registers fuller's modules too
from mmdet3d.structures import LiDARInstance3DBoxes, LiDARPoints, limit_period
from mmdet3d.structures.ops import box_np_ops
boxes = LiDARInstance3DBoxes(torch.tensor([[1., 2., -1., 4., 2., 1.5, 0.3, 1., 0.],
                                           [-5., 3., -1., 1., 1., 1.8, 2.0, 0., 0.]]), box_dim=9)
pts = np.array([[1., 2., -0.5, 0.1, 0.], [20., 0., 0., 0.1, 0.]], dtype=np.float32)
inside = box_np_ops.points_in_rbbox(pts[:, :3], boxes.tensor[:, :7].numpy())
assert inside[0, 0] and not inside[1].any(), inside
boxes.rotate(0.5); boxes.flip('horizontal'); boxes.scale(1.1); boxes.translate([0.1, 0.2, 0.])
assert boxes.in_range_bev([-54, -54, 54, 54]).all()
print('corners', tuple(boxes.corners.shape), 'bev', tuple(boxes.bev.shape))
assert float(limit_period(np.array([7.0]), 0.5, 2 * np.pi)[0]) < np.pi
points = LiDARPoints(torch.from_numpy(pts), points_dim=5)
points.rotate(0.3); points.flip('vertical')
from mmdet3d.registry import TRANSFORMS
t = TRANSFORMS.build(dict(type='GlobalRotScaleTrans', rot_range=[-0.3, 0.3], scale_ratio_range=[0.9, 1.1],
                          translation_std=[0.5, 0.5, 0.5]))
res = t(dict(points=LiDARPoints(torch.from_numpy(pts), points_dim=5), gt_bboxes_3d=boxes.clone(),
             transformation_3d_flow=[]))
print('GlobalRotScaleTrans ok', res['pcd_scale_factor'])
from mmcv.ops import Voxelization, nms_bev, points_in_boxes_all
vox = Voxelization([0.3, 0.3, 8.0], [-54, -54, -5, 54, 54, 3], 10, 1000)
v, c, n = vox(torch.from_numpy(pts).cuda())
print('Voxelization cuda', tuple(v.shape), c.tolist())
inside = points_in_boxes_all(torch.from_numpy(pts[None, :, :3]).cuda(), boxes.tensor[None, :, :7].cuda())
print('points_in_boxes_all cuda', inside[0].tolist())
from mmdet3d.evaluation.metrics import NuScenesMetric  # noqa: F401  (fuller's detection metric)
from nuscenes.eval.detection.config import config_factory
print('nuscenes detection config', config_factory('detection_cvpr_2019').dist_ths)
print('numpy2 checks ok')
PY

# ---- the CUDA tests
# (only tests/test_cuda is collected: a collection error elsewhere, e.g. a module missing on this machine,
# would stop the whole run; every cuda-marked test lives there)
# (fails with rc=3 when torch sees no GPU: the tests would all skip and look green)
stage cuda_tests 170 bash -c 'python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)" \
  || { echo "torch.cuda.is_available() is False"; exit 3; }; exec python3 -m pytest -m cuda tests/test_cuda \
  -v -rs -p no:cacheprovider --junitxml="$1"' _ "$OUT/cuda_tests.xml"

# ---- benchmarks (JSON reports)
stage bench_vt 80 python3 tools/benchmark.py --device cuda --out "$OUT/bench_view_transform.json" \
  view_transform --size bevfusion --warmup 2 --repeat 5
stage bench_full 140 python3 tools/benchmark.py --device cuda --out "$OUT/bench_full_model.json" \
  full_model --batches 1 4 --warmup 2 --iters 5

# ---- numpy 2 on a few CPU test files that go through mmdet3d (datasets, transforms, heads, metric)
stage cpu_subset 120 python3 -m pytest -q -x -m "not cuda" -p no:cacheprovider \
  tests/test_datasets/test_transforms.py tests/test_models/test_heads.py \
  tests/test_evaluation/test_bev_map_iou_metric.py tests/test_models/test_lss_view_transform.py

echo "[gpu_check] done in $(( $(date +%s) - T0 )) s; summary:"
cat "$SUMMARY" | tee "$OUT/summary.txt"
