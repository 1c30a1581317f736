#!/usr/bin/env bash
# The multi-task study (docs/study-v3/README.md): one runner. Start two at once (one CPU thread each)
# on a 2-core machine; they share the runs through lock files. Runs are trained from a pinned
# worktree (WT) so that other work in the checkout (CHECKOUT) cannot split the study across commits;
# each finished run is recorded under CHECKOUT/docs/study-v3/runs (committed), and a recorded run is
# never trained again. The work dir pins the commit and the machine (study_pin.json).
#
#   git worktree add --detach /work/study-wt <commit>        # the study's commit (README)
#   WT=/work/study-wt CHECKOUT=/work/main bash docs/study-v3/run_study.sh &   # twice
set -euo pipefail
WT=${WT:?the pinned worktree}
CHECKOUT=${CHECKOUT:?the checkout holding data/, work_dirs/ and docs/}
PY=${PY:-$CHECKOUT/.venv/bin/python}
DATA=$CHECKOUT/data/nuscenes-study
DATA_CMD="python tools/create_synthetic_nuscenes.py --root data/nuscenes-study --version v1.0-trainval \
--num-scenes 20 --num-val-scenes 6 --keyframes 8 --image-size 704 396 --seed 1; python tools/create_data.py \
nuscenes --root-path data/nuscenes-study --out-dir data/nuscenes-study --version v1.0-trainval"
OPTS=(--study multitask --data-root "$DATA" --work-dir "$CHECKOUT/work_dirs/study-v3"
      --record-dir "$CHECKOUT/docs/study-v3/runs" --epochs 4 --seeds 0 1 2 3 4 --data-command "$DATA_CMD"
      --cfg-options val_dataloader.dataset.metainfo.version=v1.0-trainval
                    test_dataloader.dataset.metainfo.version=v1.0-trainval)
# Priority (issue 21): capacity, then the static-weight front, then per-task decoders, then schedule;
# FULLER as published (IMTL-G with its own weights) at width 64 where the budget allows; the front's
# two best points at width 128, where the width-128 references already exist (added once the width-64
# front showed the weight-30 sum beside the calibration).
PHASES=(
  "det-only seg-only naive fuller-summag"
  "det-only-w128 seg-only-w128 naive-w128 fuller-summag-w128"
  "naive-seg3 naive-seg10 naive-seg30"
  "naive-taskdec fuller-summag-taskdec"
  "fuller"
  "naive-seg10-w128 naive-seg30-w128"
  "det-only-w256 seg-only-w256 naive-w256 fuller-summag-w256"
  "naive-seg3-w256 naive-seg10-w256 naive-seg30-w256"
  "det-only-e12 seg-only-e12 naive-e12 fuller-summag-e12"
)
# A later session continues the same study only at the pinned commit on the same kind of machine:
# the committed pin is put into a fresh work dir, and tools/ablation.py refuses to run where the
# commit or the machine differs.
mkdir -p "$CHECKOUT/work_dirs/study-v3"
if [ ! -f "$CHECKOUT/work_dirs/study-v3/study_pin.json" ]; then
  cp "$CHECKOUT/docs/study-v3/study_pin.json" "$CHECKOUT/work_dirs/study-v3/study_pin.json"
fi
cd "$WT"
for phase in "${PHASES[@]}"; do
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$PY" tools/ablation.py "${OPTS[@]}" --variants $phase
done
