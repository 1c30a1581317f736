#!/usr/bin/env bash
# The main job on the generated default dataset:
#   synthetic nuScenes-format dataset -> infos + map-mask cache -> FULLER training (tiny model)
#   -> devkit mAP/NDS + map mIoU evaluation -> pictures of validation samples
#   -> one report (work_dirs/demo/report.md: metrics, loss curves, calibration plots, pictures),
# with the plain-summed-loss baseline trained, evaluated and drawn the same way beside it
# (DEMO_BASELINE=0 skips it). Data stages are skipped when their output is already there;
# delete data/nuscenes-synthetic to regenerate. The time of each stage is printed at the end
# (and tabled in the report). Real nuScenes: see README.
#
# The environment report runs beside the data stage (its output: $WORK/environment.txt). The
# runs (train -> evaluate -> pictures) run concurrently, DEMO_THREADS torch threads each (1 on
# the 2-core reference machine), each writing its whole output to $WORK/<name>/run.log; the
# terminal shows one progress line per run (stage, iterations done / total, ETA) when it changes
# and at least every 30 s, and the end of a failed run's log. DEMO_JOBS=1: everything one after
# the other with the logs on the terminal, as before. Timings ($WORK/timings.tsv): a stage that
# ran beside others carries the name of its concurrent block in a third column and the block's
# own row holds its wall time, so the total (the sum of rows without a block) is the wall time.
set -euo pipefail
cd "$(dirname "$0")/.."

# The two runs compared: config files and the names the report gives them.
# FULLER with task_magnitude='sum': the FULLER variant the ablation study supports (README).
FULLER_CONFIG=${FULLER_CONFIG:-configs/fuller/fuller_tiny-summag_1xb2-24e_synthetic-nus.py}
FULLER_NAME=${FULLER_NAME:-FULLER (sum magnitude)}
BASELINE_CONFIG=${BASELINE_CONFIG:-configs/bevfusion/bevfusion_tiny_1xb2-24e_synthetic-nus.py}
BASELINE_NAME=${BASELINE_NAME:-plain sum}
DEMO_BASELINE=${DEMO_BASELINE:-1}
DEMO_JOBS=${DEMO_JOBS:-2}        # 1: one stage after the other; otherwise the runs side by side
DEMO_THREADS=${DEMO_THREADS:-1}  # torch (OpenMP) threads of each run that runs beside another

PY=${PY:-.venv/bin/python}
DATA=${DATA:-data/nuscenes-synthetic}
WORK=${WORK:-work_dirs/demo}
EPOCHS=${EPOCHS:-24}          # = max_epochs of the tiny configs
PICTURES=${PICTURES:-3}       # validation samples drawn for every run
TIMINGS=$WORK/timings.tsv

START=$(date +%s.%N)
mkdir -p "$WORK"
: > "$TIMINGS"

STAGE_FILE=$TIMINGS  # where stage() writes its row
STAGE_BLOCK=         # the concurrent block the stage runs in ('': none)
BG_PIDS=()           # background subshells, stopped (with their children) on exit

seconds_since() {  # T0 (date +%s.%N): seconds from T0 to now, one decimal
  awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}

stage() {  # LABEL COMMAND...: run COMMAND, append "LABEL<TAB>seconds[<TAB>block]" to $STAGE_FILE
  local label=$1 t0 secs
  shift
  t0=$(date +%s.%N)
  "$@"
  secs=$(seconds_since "$t0")
  if [ -n "$STAGE_BLOCK" ]; then
    printf '%s\t%s\t%s\n' "$label" "$secs" "$STAGE_BLOCK" >> "$STAGE_FILE"
  else
    printf '%s\t%s\n' "$label" "$secs" >> "$STAGE_FILE"
  fi
}

print_timings() {  # the stage table; the total is the wall clock since the start
  [ -s "$TIMINGS" ] || return 0
  local note=
  if awk -F'\t' '$3 != "" { found = 1 } END { exit !found }' "$TIMINGS"; then
    note=" (indented: ran beside the others under the same block row, which has the wall time)"
  fi
  echo "[demo] time per stage$note:"
  awk -F'\t' '{ if ($3 != "") printf "    %-36s %7.1f s\n", $1, $2
                else printf "  %-38s %7.1f s\n", $1, $2 }' "$TIMINGS"
  awk -v t="$(seconds_since "$START")" \
      'BEGIN { printf "  %-38s %7.1f s (%.1f min, wall clock)\n", "total", t, t / 60 }'
}

tree_pids() {  # PID: PID and all its descendants
  local child
  echo "$1"
  for child in $(pgrep -P "$1" || true); do tree_pids "$child"; done
}

stop_background() {  # stop the background subshells still running, and their children
  local pid
  for pid in "${BG_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      # shellcheck disable=SC2046  # one pid per word
      kill $(tree_pids "$pid") 2>/dev/null || true
    fi
  done
}

on_exit() {
  stop_background
  print_timings
}
trap on_exit EXIT
trap 'exit 130' INT TERM

make_data() {  # generate (once), then infos + map masks: both tools in one process, so that
              # fuller's imports (~10 s) are paid once
  local generate=()
  if [ ! -f "$DATA/v1.0-mini/sample.json" ]; then
    generate=(--root "$DATA" --num-scenes 4 --keyframes 8 --image-size 704 396)
  fi
  $PY -c 'import runpy, sys
cut = sys.argv.index("--")
tool = lambda name: runpy.run_path(f"tools/{name}.py")["main"]
sys.exit(cut > 1 and tool("create_synthetic_nuscenes")(sys.argv[1:cut])
         or tool("create_data")(sys.argv[cut + 1:]))' \
      "${generate[@]}" -- nuscenes --root-path "$DATA" --out-dir "$DATA" --version v1.0-mini
}

# The environment report (imports only, ~12 s) beside the data stage; its output is shown after.
setup_stages() {
  if [ "$DEMO_JOBS" = 1 ]; then
    stage "environment report" $PY -m fuller.utils.collect_env
    stage "data (generate + infos/masks)" make_data
    return
  fi
  local block="environment report + data" t0 env_pid
  t0=$(date +%s.%N)
  (STAGE_FILE=$WORK/environment.tsv STAGE_BLOCK=$block
   : > "$STAGE_FILE"
   stage "environment report" $PY -m fuller.utils.collect_env) > "$WORK/environment.txt" 2>&1 &
  env_pid=$!
  BG_PIDS+=("$env_pid")
  : > "$WORK/data.tsv"
  STAGE_FILE=$WORK/data.tsv STAGE_BLOCK=$block
  stage "data (generate + infos/masks)" make_data
  STAGE_FILE=$TIMINGS STAGE_BLOCK=
  if ! wait "$env_pid"; then
    echo "[demo] environment report failed:" >&2
    cat "$WORK/environment.txt" >&2
    exit 1
  fi
  cat "$WORK/environment.txt"
  printf '%s\t%s\n' "$block" "$(seconds_since "$t0")" >> "$TIMINGS"
  cat "$WORK/environment.tsv" "$WORK/data.tsv" >> "$TIMINGS"
  rm -f "$WORK/environment.tsv" "$WORK/data.tsv"
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

evaluate() {  # NAME CONFIG: a log line (progress, ETA) per validation sample
  $PY tools/test.py "$2" "$WORK/$1/epoch_$EPOCHS.pth" --work-dir "$WORK/$1" \
      --data-root "$DATA" --out-metrics "$WORK/$1/metrics.json" \
      --cfg-options default_hooks.logger.interval=1
}

draw() {  # NAME CONFIG TITLE: the same validation samples for every run
  $PY tools/analysis/visualize.py "$2" "$WORK/$1/epoch_$EPOCHS.pth" --data-root "$DATA" \
      --split val --samples "$PICTURES" --title "$3" --out-dir "$WORK/$1/pictures"
}

mark() {  # STAGE: the line progress_line() reads a run's current stage from
  [ "$DEMO_JOBS" = 1 ] || echo "[demo] stage $1"
}

run_one() {  # I: train -> evaluate -> pictures of run I
  local name=${names[$1]} config=${configs[$1]} title=${titles[$1]}
  mark train
  stage "train $title" train "$name" "$config"
  mark evaluate
  stage "evaluate $title" evaluate "$name" "$config"
  mark pictures
  stage "pictures $title" draw "$name" "$config" "$title"
}

progress_line() {  # I: "TITLE: STAGE DONE/TOTAL (PCT%), eta ETA", read from run I's log
  local name=${names[$1]} title=${titles[$1]}
  if [ -f "$WORK/$name/rc" ]; then
    if [ "$(cat "$WORK/$name/rc")" = 0 ]; then echo "$title: done"; else echo "$title: FAILED"; fi
    return
  fi
  [ -f "$WORK/$name/run.log" ] || { echo "$title: starting"; return; }
  awk -v title="$title" -v epochs="$EPOCHS" '
    function eta_of(s) { return match(s, /eta: [0-9:]+/) ? substr(s, RSTART + 5, RLENGTH - 5) : "" }
    /^\[demo\] stage / { stage = $3; n = total = 0; eta = ""; next }
    stage == "train" && /Epoch\(train\) *\[[0-9]+\]\[ *[0-9]+\/[0-9]+\]/ {
      s = $0; sub(/.*Epoch\(train\) *\[/, "", s); split(s, a, /[^0-9]+/)
      n = (a[1] - 1) * a[3] + a[2]; total = epochs * a[3]; eta = eta_of(s); next }
    stage == "evaluate" && /Epoch\(test\) *\[ *[0-9]+\/[0-9]+\]/ {
      s = $0; sub(/.*Epoch\(test\) *\[ */, "", s); split(s, a, /[^0-9]+/)
      n = a[1]; total = a[2]; eta = eta_of(s); next }
    stage == "pictures" && /^\[visualize\] [0-9]+\/[0-9]+/ {
      split($2, a, "/"); n = a[1]; total = a[2]; eta = eta_of($0); next }
    END {
      if (stage == "") { printf "%s: starting\n", title; exit }
      if (total == 0) { printf "%s: %s, starting up\n", title, stage; exit }
      tail = ""
      if (n < total && eta != "") tail = ", eta " eta
      else if (n >= total && stage == "train") tail = ", saving the checkpoint"
      else if (n >= total && stage == "evaluate") tail = ", computing the metrics"
      printf "%s: %s %d/%d (%d%%)%s\n", title, stage, n, total, 100 * n / total, tail
    }' "$WORK/$name/run.log"
}

watch_runs() {  # until all runs ended or one failed: a run's progress line when it changes, and
                # every 30 s; sets FAILED to the indices of failed runs
  local i name pending clock line
  local -a shown=() shown_at=()
  while :; do
    pending=0
    FAILED=()
    for i in "${!names[@]}"; do
      name=${names[$i]}
      if [ ! -f "$WORK/$name/rc" ]; then
        pending=$((pending + 1))
      elif [ "$(cat "$WORK/$name/rc")" != 0 ]; then
        FAILED+=("$i")
      fi
    done
    clock=$(date +%s)
    for i in "${!names[@]}"; do
      line=$(progress_line "$i")
      if [ "$line" != "${shown[$i]:-}" ] || [ $((clock - ${shown_at[$i]:-0})) -ge 30 ]; then
        echo "[demo $(date +%H:%M:%S)] $line"
        shown[$i]=$line
        shown_at[$i]=$clock
      fi
    done
    if [ ${#FAILED[@]} -gt 0 ] || [ "$pending" = 0 ]; then
      return 0
    fi
    sleep 2
  done
}

runs_side_by_side() {  # every run in the background, DEMO_THREADS threads each
  local block="runs (side by side)" t0 i name
  local -a pids=()
  t0=$(date +%s.%N)
  echo "[demo] ${#names[@]} runs side by side, $DEMO_THREADS thread(s) each;" \
       "full logs: $WORK/{$(IFS=,; echo "${names[*]}")}/run.log"
  for i in "${!names[@]}"; do
    name=${names[$i]}
    mkdir -p "$WORK/$name"
    rm -f "$WORK/$name/rc"
    : > "$WORK/$name/timings.tsv"
    (set +e
     (set -e
      STAGE_FILE=$WORK/$name/timings.tsv STAGE_BLOCK=$block
      export OMP_NUM_THREADS=$DEMO_THREADS MKL_NUM_THREADS=$DEMO_THREADS PYTHONUNBUFFERED=1
      run_one "$i") > "$WORK/$name/run.log" 2>&1
     echo $? > "$WORK/$name/rc") &
    pids+=($!)
    BG_PIDS+=($!)
  done
  watch_runs
  if [ ${#FAILED[@]} -gt 0 ]; then
    stop_background
  fi
  wait "${pids[@]}" || true
  printf '%s\t%s\n' "$block" "$(seconds_since "$t0")" >> "$TIMINGS"
  for name in "${names[@]}"; do cat "$WORK/$name/timings.tsv" >> "$TIMINGS"; done
  for i in "${FAILED[@]}"; do
    echo "[demo] ${titles[$i]} failed; the end of $WORK/${names[$i]}/run.log:" >&2
    tail -n 40 "$WORK/${names[$i]}/run.log" >&2
  done
  [ ${#FAILED[@]} = 0 ] || exit 1
}

setup_stages

names=(fuller)
titles=("$FULLER_NAME")
configs=("$FULLER_CONFIG")
if [ "$DEMO_BASELINE" = 1 ]; then
  names+=(baseline)
  titles+=("$BASELINE_NAME")
  configs+=("$BASELINE_CONFIG")
fi
notes="Tiny camera+LiDAR model, $EPOCHS epochs on the generated dataset ($DATA), CPU"
runs=()
for i in "${!names[@]}"; do
  runs+=(--run "${titles[$i]}" "$WORK/${names[$i]}/metrics.json")
done
if [ "$DEMO_JOBS" = 1 ] || [ ${#names[@]} = 1 ]; then
  for i in "${!names[@]}"; do run_one "$i"; done
else
  runs_side_by_side
  notes+=", the runs side by side with $DEMO_THREADS thread(s) each"
fi

stage "calibration plots" $PY tools/analysis/plot_calibration.py "$WORK/fuller" \
    --out-dir "$WORK/fuller/calibration_plots"
stage "report" $PY tools/analysis/demo_report.py "${runs[@]}" \
    --calibration-dir "$WORK/fuller/calibration_plots" --timings "$TIMINGS" \
    --out "$WORK/report.md" \
    --notes "$notes."
echo "[demo] report: $WORK/report.md ($(seconds_since "$START") s)"
