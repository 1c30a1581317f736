#!/usr/bin/env bash
# The main job on the generated default dataset:
#   synthetic nuScenes-format dataset -> infos + map-mask cache -> FULLER training (tiny model)
#   -> devkit mAP/NDS + map mIoU evaluation -> pictures of validation samples
#   -> one report (work_dirs/demo/report.md: metrics, loss curves, calibration plots, pictures),
# with the plain-summed-loss baseline trained, evaluated and drawn the same way beside it
# (DEMO_BASELINE=0 skips it). Data stages are skipped when their output is already there;
# delete data/nuscenes-synthetic to regenerate. The time of each stage is printed at the end
# (and tabled in the report). Real nuScenes: see README.
set -euo pipefail
cd "$(dirname "$0")/.."

# The two runs compared: config files and the names the report gives them.
# FULLER with task_magnitude='sum': the FULLER variant the ablation study supports (README).
FULLER_CONFIG=${FULLER_CONFIG:-configs/fuller/fuller_tiny-summag_1xb2-24e_synthetic-nus.py}
FULLER_NAME=${FULLER_NAME:-FULLER (sum magnitude)}
BASELINE_CONFIG=${BASELINE_CONFIG:-configs/bevfusion/bevfusion_tiny_1xb2-24e_synthetic-nus.py}
BASELINE_NAME=${BASELINE_NAME:-plain sum}
DEMO_BASELINE=${DEMO_BASELINE:-1}

PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/nuscenes-synthetic}
WORK=${WORK:-work_dirs/demo}
EPOCHS=${EPOCHS:-24}          # = max_epochs of the tiny configs
PICTURES=${PICTURES:-3}       # validation samples drawn for every run
TIMINGS=$WORK/timings.tsv

mkdir -p "$WORK"
: > "$TIMINGS"

stage() {  # LABEL COMMAND...: run COMMAND, append "LABEL<TAB>seconds" to $TIMINGS
  local label=$1 t0 t1
  shift
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  awk -v l="$label" -v a="$t0" -v b="$t1" 'BEGIN { printf "%s\t%.1f\n", l, b - a }' >> "$TIMINGS"
}

print_timings() {
  [ -s "$TIMINGS" ] || return 0
  echo "[demo] time per stage:"
  awk -F'\t' '{ printf "  %-30s %7.1f s\n", $1, $2; t += $2 }
              END { printf "  %-30s %7.1f s (%.1f min)\n", "total", t, t / 60 }' "$TIMINGS"
}
trap print_timings EXIT

make_data() {
  if [ ! -f "$DATA/v1.0-mini/sample.json" ]; then
    $PY tools/create_synthetic_nuscenes.py --root "$DATA" --num-scenes 4 --keyframes 8 \
        --image-size 704 396
  fi
  $PY tools/create_data.py nuscenes --root-path "$DATA" --out-dir "$DATA" --version v1.0-mini
}

# Training: no validation inside training (tools/test.py evaluates the last checkpoint right
# after, the same evaluation) and one checkpoint at the end instead of one per epoch.
train() {  # NAME CONFIG
  $PY tools/train.py "$2" --work-dir "$WORK/$1" --data-root "$DATA" \
      --cfg-options train_cfg.max_epochs="$EPOCHS" train_cfg.val_interval="$EPOCHS" \
      train_cfg.val_begin=$((EPOCHS + 1)) \
      default_hooks.checkpoint.interval="$EPOCHS" \
      param_scheduler.1.T_max="$EPOCHS" param_scheduler.1.end="$EPOCHS"
}

evaluate() {  # NAME CONFIG
  $PY tools/test.py "$2" "$WORK/$1/epoch_$EPOCHS.pth" --work-dir "$WORK/$1" \
      --data-root "$DATA" --out-metrics "$WORK/$1/metrics.json"
}

draw() {  # NAME CONFIG TITLE: the same validation samples for every run
  $PY tools/analysis/visualize.py "$2" "$WORK/$1/epoch_$EPOCHS.pth" --data-root "$DATA" \
      --split val --samples "$PICTURES" --title "$3" --out-dir "$WORK/$1/pictures"
}

start=$(date +%s)
stage "environment report" $PY -m fuller.utils.collect_env
stage "data (generate + infos/masks)" make_data

names=(fuller)
titles=("$FULLER_NAME")
configs=("$FULLER_CONFIG")
if [ "$DEMO_BASELINE" = 1 ]; then
  names+=(baseline)
  titles+=("$BASELINE_NAME")
  configs+=("$BASELINE_CONFIG")
fi
runs=()
for i in "${!names[@]}"; do
  stage "train ${titles[$i]}" train "${names[$i]}" "${configs[$i]}"
  stage "evaluate ${titles[$i]}" evaluate "${names[$i]}" "${configs[$i]}"
  stage "pictures ${titles[$i]}" draw "${names[$i]}" "${configs[$i]}" "${titles[$i]}"
  runs+=(--run "${titles[$i]}" "$WORK/${names[$i]}/metrics.json")
done

stage "calibration plots" $PY tools/analysis/plot_calibration.py "$WORK/fuller" \
    --out-dir "$WORK/fuller/calibration_plots"
stage "report" $PY tools/analysis/demo_report.py "${runs[@]}" \
    --calibration-dir "$WORK/fuller/calibration_plots" --timings "$TIMINGS" \
    --out "$WORK/report.md" \
    --notes "Tiny camera+LiDAR model, $EPOCHS epochs on the generated dataset ($DATA), CPU."
echo "[demo] report: $WORK/report.md ($(( $(date +%s) - start )) s)"
