#!/usr/bin/env bash
# `--recipe cars64-2min` end to end on one GPU, as a user runs it: train for its 2.15 minutes
# (the tutorial's fastest measured time), then FID with ancestral DDPM-100 (8,144 samples
# against the 8,144 photos) and a 64-sample grid. Two calls, because the photos and the
# Inception network do not fit one 64 MiB upload; the second must follow at once:
#   1. carry .cars (the photos zip and the devkit):   bash benchmarks/gpu/cars_recipe.sh train
#   2. carry .inc (fid-inception-fp16.pt):             bash benchmarks/gpu/cars_recipe.sh score
# CPU smoke: R=/tmp/cr OUT=/tmp/cr-out TRAIN_ARGS="--max-minutes 0.05 --device cpu" N=16
#   STEPS=3 EVAL_ARGS="--device cpu" INCEPTION=<a tiny Inception> for both calls.
set -eu
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
R=${R:-/root/cars-recipe}
D=stanford-cars:$R/stanford_cars/cars_train_128x96.zip
ddpm=(python3 -m ddpm)
mkdir -p "$OUT" "$R"

case ${1:-} in
train)  # in the background, so that the second call can bring the Inception network
  cp -r .cars/. "$R/"
  setsid bash -c "${ddpm[*]} train --recipe cars64-2min --data $D --out $R/run --quiet \
    ${TRAIN_ARGS:-} >$R/train.log 2>&1; echo \$? >$R/train.rc" </dev/null >/dev/null 2>&1 &
  sleep 5; cat "$R/train.log"
  ;;
score)
  INC=(--inception "${INCEPTION:-.inc/fid-inception-fp16.pt}")
  "${ddpm[@]}" fid-stats "$D" --image-size 64 --resize squash -o "$R/cars64.npz" "${INC[@]}" --quiet
  while [[ ! -e $R/train.rc ]]; do sleep 2; done
  cat "$R/train.log"; cp "$R/run/log.csv" "$OUT/cars64-2min-log.csv"
  [[ $(cat "$R/train.rc") == 0 ]] || exit 1
  S=(--sampler ddpm --steps "${STEPS:-100}")
  "${ddpm[@]}" eval --checkpoint "$R/run" --fid-stats "$R/cars64.npz" "${INC[@]}" --n "${N:-8144}" \
    "${S[@]}" --quiet ${EVAL_ARGS:-} --json "$OUT/cars64-2min-fid.json"
  "${ddpm[@]}" sample --checkpoint "$R/run" --n 64 "${S[@]}" --no-compile \
    --out "$OUT/cars64-2min.png" --quiet ${EVAL_ARGS:-}
  cat "$OUT/cars64-2min-fid.json"
  ;;
*)
  echo "usage: bash benchmarks/gpu/cars_recipe.sh train|score" >&2
  exit 2
  ;;
esac
