#!/usr/bin/env bash
# The main job on the generated default dataset:
#   synthetic nuScenes-format dataset -> infos + map-mask cache -> FULLER training (tiny model)
#   -> devkit mAP/NDS + map mIoU evaluation -> report (work_dirs/demo/report.md),
# with the plain-summed-loss baseline trained and evaluated the same way beside it
# (DEMO_BASELINE=0 skips it). Data stages are skipped when their output is already there;
# delete data/nuscenes-synthetic to regenerate. Real nuScenes: see README.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/nuscenes-synthetic}
WORK=${WORK:-work_dirs/demo}
EPOCHS=${EPOCHS:-24}  # = max_epochs of the tiny configs
DEMO_BASELINE=${DEMO_BASELINE:-1}
start=$(date +%s)

$PY -m fuller.utils.collect_env

if [ ! -f "$DATA/v1.0-mini/sample.json" ]; then
  $PY tools/create_synthetic_nuscenes.py --root "$DATA" --num-scenes 4 --keyframes 8 \
      --image-size 704 396
fi
$PY tools/create_data.py nuscenes --root-path "$DATA" --out-dir "$DATA" --version v1.0-mini

train_and_test() {  # NAME CONFIG
  local name=$1 config=$2
  $PY tools/train.py "$config" --work-dir "$WORK/$name" --data-root "$DATA" \
      --cfg-options train_cfg.max_epochs="$EPOCHS" train_cfg.val_interval="$EPOCHS" \
      param_scheduler.1.T_max="$EPOCHS" param_scheduler.1.end="$EPOCHS"
  $PY tools/test.py "$config" "$WORK/$name/epoch_$EPOCHS.pth" --work-dir "$WORK/$name" \
      --data-root "$DATA" --out-metrics "$WORK/$name/metrics.json"
}

train_and_test fuller configs/fuller/fuller_tiny_1xb2-24e_synthetic-nus.py
runs=(--run FULLER "$WORK/fuller/metrics.json")
if [ "$DEMO_BASELINE" = 1 ]; then
  train_and_test baseline configs/bevfusion/bevfusion_tiny_1xb2-24e_synthetic-nus.py
  runs+=(--run "plain sum" "$WORK/baseline/metrics.json")
fi
$PY tools/analysis/plot_calibration.py "$WORK/fuller" --out-dir "$WORK/fuller/calibration_plots"
$PY tools/analysis/demo_report.py "${runs[@]}" --out "$WORK/report.md" \
    --notes "Tiny camera+LiDAR model, $EPOCHS epochs on the generated dataset ($DATA), CPU. Calibration plots: $WORK/fuller/calibration_plots/."
echo "[demo] report: $WORK/report.md ($(( $(date +%s) - start )) s)"
