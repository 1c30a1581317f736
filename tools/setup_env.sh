#!/usr/bin/env bash
# Create (or re-use) .venv with the pinned fuller stack. Idempotent: a stamp file holding the hash of
# requirements/ makes a second run a no-op check; pip's wheel cache keeps the mmcv build (the slow part).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
VENV=${VENV:-$ROOT/.venv}
STAMP=$VENV/.fuller-env-stamp
REQ_HASH=$(cat requirements/*.txt setup.py | sha256sum | cut -d' ' -f1)

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup_env] creating $VENV"
  "$PY" -m venv "$VENV"
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$REQ_HASH" ]; then
  echo "[setup_env] $VENV is up to date"
  exit 0
fi
PIP=("$VENV/bin/python" -m pip)
C=(-c requirements/constraints.txt)
start=$(date +%s)
# 1) build prerequisites of mmcv (it is compiled without build isolation, so torch must be present)
"${PIP[@]}" install "${C[@]}" -r requirements/build.txt
# 2) the whole runtime + test stack in ONE resolution
MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" install --no-build-isolation "${C[@]}" \
  -r requirements/runtime.txt -r requirements/tests.txt
# 3) fuller itself, editable
"${PIP[@]}" install --no-deps --no-build-isolation -e .
"$VENV/bin/python" - <<'PY'
import mmcv.ops, spconv, mmdet3d, nuscenes, numpy, torch
from mmcv.ops import Voxelization  # compiled ops must be present
import fuller
print(f'[setup_env] torch {torch.__version__} numpy {numpy.__version__} mmcv {mmcv.__version__} '
      f'mmdet3d {mmdet3d.__version__} fuller {fuller.__version__}')
PY
echo "$REQ_HASH" > "$STAMP"
echo "[setup_env] done in $(( $(date +%s) - start )) s"
