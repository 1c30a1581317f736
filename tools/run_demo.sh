#!/usr/bin/env bash
# The main job on the generated default dataset:
#   synthetic nuScenes-format dataset -> infos + map-mask cache -> (training -> evaluation -> report)
# Each stage is skipped when its output is already there; delete data/nuscenes-synthetic to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/nuscenes-synthetic}

$PY -m fuller.utils.collect_env

if [ ! -f "$DATA/v1.0-mini/sample.json" ]; then
  $PY tools/create_synthetic_nuscenes.py --root "$DATA"
fi
$PY tools/create_data.py nuscenes --root-path "$DATA" --out-dir "$DATA" --version v1.0-mini
