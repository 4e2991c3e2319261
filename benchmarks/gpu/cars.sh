#!/usr/bin/env bash
# Stanford Cars at 64x64 on one GPU: the tutorial's recipe as it ran, then ours for the same
# training minutes, then FID of both against the 8,144 training photos (squashed to 64x64, as
# both models see them; 8,144 samples each) and their sample grids side by side.
#
# Two calls, because the photos and the Inception network do not fit one 64 MiB upload; the
# second must follow at once, while the machine still holds /root/cars:
#   1. carry .cars (stanford_cars/cars_train_128x96.zip and stanford_cars_devkit/):
#        bash benchmarks/gpu/cars.sh train
#   2. carry .fid (fid-inception-fp16.pt):
#        bash benchmarks/gpu/cars.sh score          # tables and grids under $OUT
# Extra flags for both training runs (a CPU smoke test: TRAIN_ARGS="--epochs 0.05 --device cpu"
# and R=/tmp/cars): TRAIN_ARGS; for the scoring: N (samples, default 8144), EVAL_ARGS.
set -eu
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
R=${R:-/root/cars}
N=${N:-8144}
ddpm=(python3 -m ddpm)
mkdir -p "$OUT"

case ${1:-} in
train)
  mkdir -p "$R" && cp -r .cars/. "$R/"
  D=stanford-cars:$R/stanford_cars/cars_train_128x96.zip
  "${ddpm[@]}" train --recipe tutorial --data "$D" --out "$R/tutorial" --quiet ${TRAIN_ARGS:-}
  # the tutorial's training-loop time (log.csv's windows), which ours gets too
  MIN=$(python3 -c "import csv,sys; print(sum(float(r['seconds']) for r in csv.DictReader(open(sys.argv[1]))) / 60)" "$R/tutorial/log.csv")
  echo "tutorial recipe: $MIN minutes of training" | tee "$OUT/minutes.txt"
  "${ddpm[@]}" train --recipe cars64-fast --data "$D" --resize squash --max-minutes "$MIN" \
    --out "$R/ours" --quiet ${TRAIN_ARGS:-}
  cp "$R/tutorial/log.csv" "$OUT/tutorial-log.csv"; cp "$R/ours/log.csv" "$OUT/ours-log.csv"
  ;;
score)
  D=stanford-cars:$R/stanford_cars/cars_train_128x96.zip
  INC=(--inception "${INCEPTION:-.fid/fid-inception-fp16.pt}")
  "${ddpm[@]}" fid-stats "$D" --image-size 64 --resize squash -o "$R/cars64.npz" "${INC[@]}" --quiet
  E=(--fid-stats "$R/cars64.npz" "${INC[@]}" --n "$N" --quiet ${EVAL_ARGS:-})
  "${ddpm[@]}" eval --checkpoint "$R/tutorial" "${E[@]}" --sampler ddpm --json "$OUT/tutorial-fid.json"
  "${ddpm[@]}" eval --checkpoint "$R/ours" "${E[@]}" --sampler ddim --steps 50 --json "$OUT/ours-fid.json"
  "${ddpm[@]}" sample --checkpoint "$R/tutorial" --n 64 --sampler ddpm --out "$OUT/tutorial.png" --quiet ${EVAL_ARGS:-}
  "${ddpm[@]}" sample --checkpoint "$R/ours" --n 64 --sampler ddim --steps 50 --out "$OUT/ours.png" --quiet ${EVAL_ARGS:-}
  cat "$OUT"/*-fid.json
  ;;
*)
  echo "usage: bash benchmarks/gpu/cars.sh train|score" >&2
  exit 2
  ;;
esac
