#!/usr/bin/env bash
# The FAMO study (docs/study-famo/README.md): one runner. Start two at once (one CPU thread each) on a
# 2-core machine; they share the runs through lock files. Runs are trained from a worktree pinned to
# the study's commit (WT); each finished run is recorded under CHECKOUT/docs/study-famo/runs (committed)
# and never trained again. The work dir pins the commit and the machine (study_pin.json).
#
#   git worktree add --detach /work/famo-wt <commit>                      # the study's commit (README)
#   WT=/work/famo-wt CHECKOUT=/work/main bash docs/study-famo/run_study.sh &   # twice
set -euo pipefail
WT=${WT:?the pinned worktree}
CHECKOUT=${CHECKOUT:?the checkout holding data/, work_dirs/ and docs/}
PY=${PY:-$CHECKOUT/.venv/bin/python}
DATA=$CHECKOUT/data/nuscenes-study
# the dataset of docs/study and docs/study-v3
DATA_CMD="python tools/create_synthetic_nuscenes.py --root data/nuscenes-study --version v1.0-trainval \
--num-scenes 20 --num-val-scenes 6 --keyframes 8 --image-size 704 396 --seed 1; python tools/create_data.py \
nuscenes --root-path data/nuscenes-study --out-dir data/nuscenes-study --version v1.0-trainval"
OPTS=(--study multitask --data-root "$DATA" --work-dir "$CHECKOUT/work_dirs/study-famo"
      --record-dir "$CHECKOUT/docs/study-famo/runs" --epochs 4 --seeds 0 1 2 3 4 --data-command "$DATA_CMD"
      --cfg-options val_dataloader.dataset.metainfo.version=v1.0-trainval
                    test_dataloader.dataset.metainfo.version=v1.0-trainval)
# Width 64, 4 epochs (study-v3's `w64` setting) at a commit of its own: the references and FAMO first,
# then the two static-weight points of study-v3's front that bracket FAMO's effective map-loss weight
# (FAMO's factor ratio a_seg / a_det; README), then FULLER with the sum's length.
PHASES=(
  "det-only seg-only naive famo"
  "naive-seg10 naive-seg30"
  "fuller-summag"
)
if [ -f "$CHECKOUT/docs/study-famo/study_pin.json" ] && [ ! -f "$CHECKOUT/work_dirs/study-famo/study_pin.json" ]; then
  mkdir -p "$CHECKOUT/work_dirs/study-famo"
  cp "$CHECKOUT/docs/study-famo/study_pin.json" "$CHECKOUT/work_dirs/study-famo/study_pin.json"
fi
cd "$WT"
for phase in "${PHASES[@]}"; do
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$PY" tools/ablation.py "${OPTS[@]}" --variants $phase
done
