#!/usr/bin/env bash
# Why the tutorial's SimpleUnet trained with our recipe scored FID 245 on Stanford Cars in the
# third round (docs/benchmarks.md, issue 10): the same run again on one GPU, then its EMA and
# raw weights sampled with DDIM-50, and the EMA with ancestral DDPM over 50 respaced steps. If the
# EMA scores far worse than the raw weights, the copied BatchNorm statistics are the cause; if
# DDPM scores far better than DDIM, the network's noise estimates are what the ODE amplifies.
# Two calls, issued back to back (the machine goes back 30 s after a call):
#   1. carry .cars (the photos zip and the devkit):  bash benchmarks/gpu/simpleunet_probe.sh train
#   2. carry .inc (the fp16 Inception network):     bash benchmarks/gpu/simpleunet_probe.sh score
set -u
R=${R:-/root/probe} OUT=${OUT:-/tmp/out} MIN=${MIN:-2.22} N=${N:-8144}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
CARS=stanford-cars:$R/stanford_cars/cars_train_128x96.zip
mkdir -p "$R" "$OUT"
case ${1:-} in
train)
  cp -r .cars/. "$R/"
  setsid bash -c "python3 -m ddpm train --data $CARS --recipe cars64-fast --resize squash \
    --max-minutes $MIN --preset tutorial --out $R/run --quiet ${TRAIN_ARGS:-} >$R/train.log 2>&1;
    touch $R/trained" </dev/null >/dev/null 2>&1 &
  sleep 5; cat "$R/train.log"
  ;;
score)
  while [[ ! -e $R/trained ]]; do sleep 2; done
  cat "$R/train.log"; cp "$R/run/log.csv" "$OUT/simpleunet-probe-log.csv"
  INC=$PWD/.inc/fid-inception-fp16.pt
  python3 -m ddpm fid-stats "$CARS" --image-size 64 --resize squash -o "$R/cars64.npz" \
    --inception "$INC" --quiet ${EVAL_ARGS:-}
  ck=$(ls "$R"/run/ckpt-*.pt | tail -1)
  python3 benchmarks/fid_sweep.py --stats "$R/cars64.npz" --inception "$INC" --n "$N" \
    --json "$OUT/simpleunet-probe.json" --grid "1:$OUT/simpleunet-probe-raw.png" ${EVAL_ARGS:-} \
    --case "$ck:ema:ddim:50" --case "$ck:raw:ddim:50" --case "$ck:ema:ddpm:50::variance=small"
  ;;
*) echo "usage: bash benchmarks/gpu/simpleunet_probe.sh train|score" >&2; exit 2 ;;
esac
