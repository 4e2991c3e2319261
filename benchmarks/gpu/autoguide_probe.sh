#!/usr/bin/env bash
# Does autoguidance help within 50 network evaluations? One call on one GPU, for when too
# little device time is left for a round (written 2026-11-27 in the twelfth session, after
# that round's machine went back with its results): the CIFAR-10 *test* split (10,000 images,
# 10 MB: it fits the 64 MiB upload beside the Inception network, the train zip does not) is
# both the training data and the FID reference (statistics computed here), the recipe trains
# on it for MINUTES (3; snapshots at 2 and 3), and the 3-minute model is scored with N
# (4,000) samples a case: DPM-Solver++(2M) at 25 steps alone and guided by the 2-minute
# snapshot (w 1 and 0.5; 50 evaluations), with the guidance limited to sigma in (0.28, 5.42]
# at 30 steps (45), and unguided at 50 steps. The FIDs are against the 10,000 training
# images, so they compare the cases with each other only, not with the FID-10k of the
# train-split recipe. Each case is written to $OUT as it is scored: a call cut short keeps
# those done.
# PROBE=weights (written 2026-11-28, when a lost round left too little time for the 8-minute
# sweep) asks what that sweep would: which guidance weight and which guide. Snapshots at 1.5,
# 2 and 3 minutes; DPM-Solver++(2M) at 25 steps alone, guided with w 1 by the 2-minute
# snapshot (the first probe's best, again) and by the 1.5-minute one, and with w 1.5 and 2 by
# the 2-minute one. Seen (2026-11-28, 01:39-01:45 UTC, 344 s): 25.78 alone; w 1 by 2 minutes
# 19.77, by 1.5 minutes 27.05 (worse than alone); w 1.5 19.43, w 2 21.14. In steps the
# snapshots are at 21% and 47% of the run (the first 75 s compile), the 8-minute recipe's
# 4-minute snapshot at 42%: round.sh PLAN=thirteenth guides by it, and by 3 and 5.33.
# PROBE=ema (written 2026-11-28 in the fourteenth session, with 422 s of device time left
# after the thirteenth round gave 10.12 at w 1.5 by the 4-minute snapshot): which weights,
# around that case? Snapshots at 2, 2.5 and 3 minutes (47% and about 71% of the steps); at
# 25 steps with w 1.5: by the 2-minute snapshot (the reference, 19.43 before), by its 0.2
# EMA (a longer EMA makes the guide better, so predicted worse: 19.5-20.5), the main model's
# 0.2 EMA by the 2-minute snapshot (predicted level, within 0.5), and by the 2.5-minute
# snapshot (nearer the model, so predicted worse: 20-21). Seen (2026-11-28, 03:51-03:57 UTC,
# 340 s): 18.96 for the reference; the guide's 0.2 EMA 20.58 and the 2.5-minute guide (74%)
# 22.36, both worse as predicted and by more; the main model's 0.2 EMA 29.22, far worse
# (predicted level: wrong). round.sh PLAN=fourteenth takes guides at 35% and 49% instead.
#   carry .test (test.zip) and .inc (the Inception network alone, 44 MB):
#   bash benchmarks/gpu/autoguide_probe.sh        (CPU smoke: SMOKE=1 OUT=/tmp/o bash ...)
set -u
OUT=${OUT:-/tmp/out} W=${W:-/root/ag}
mkdir -p "$W" "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
ddpm() { python3 -m ddpm "$@"; }
stamp() { echo "$(date -u +%T) $*"; }
DATA=.test/test.zip
if [[ -n ${SMOKE:-} ]]; then  # 100 of the images, a small network, a few seconds
  MIN=0.1 SNAPS=0.05,0.1 N=64 K=(3 4 6) X=(--preset small --image-size 16 --batch-size 8 --device cpu)
  DEV=(--device cpu) DATA=$W/small.zip
  python3 -c "import zipfile, sys; a = zipfile.ZipFile(sys.argv[1]); b = zipfile.ZipFile(sys.argv[2], 'w')
for n in [n for n in a.namelist() if n.endswith('.jpg')][::100]: b.writestr(n, a.read(n))" .test/test.zip "$DATA"
else
  MIN=${MINUTES:-3} SNAPS=2,${MINUTES:-3} N=${N:-4000} K=(25 30 50) X=() DEV=()
fi
[[ ${PROBE:-} == weights ]] && SNAPS=$(python3 -c "m = $MIN; print(f'{m / 2:g},{m * 2 / 3:g},{m:g}')")
[[ ${PROBE:-} == ema ]] && SNAPS=$(python3 -c "m = $MIN; print(f'{m * 2 / 3:g},{m * 5 / 6:g},{m:g}')")
INC=${INC:-.inc/fid-inception-fp16.pt}  # the network alone: with the statistics file it would not fit
stamp "reference statistics of the 10,000 test images"
ddpm fid-stats "$DATA" -o "$W/ref.npz" --inception "$INC" --quiet "${DEV[@]}" || exit 1
stamp "the recipe on them for $MIN minutes"
ddpm train --recipe cifar10-8min --data "$DATA" --max-minutes "$MIN" \
  --snapshot-minutes "$SNAPS" --out "$W/run" --quiet --no-final-pictures "${X[@]}" || exit 1
cp "$W/run/log.csv" "$OUT/train-log.csv"
mapfile -t s < <(for f in "$W"/run/snapshot-*min.pt; do  # by their minutes
  m=${f##*snapshot-}; echo "${m%min.pt} $f"; done | sort -g | cut -d' ' -f2-)
a=${s[-1]} g=${s[-2]} iv=interval=0.28,5.42  # the last snapshot, guided by the one before
stamp "sweep: $a guided by $g"
if [[ ${PROBE:-} == weights ]]; then
  c=("$a:ema:dpm-solver:${K[0]}" "$a:ema:dpm-solver:${K[0]}::guidance=1:guide=$g"
    "$a:ema:dpm-solver:${K[0]}::guidance=1:guide=${s[0]}" "$a:ema:dpm-solver:${K[0]}::guidance=1.5:guide=$g"
    "$a:ema:dpm-solver:${K[0]}::guidance=2:guide=$g")
elif [[ ${PROBE:-} == ema ]]; then
  c=("$a:ema:dpm-solver:${K[0]}::guidance=1.5:guide=${s[-3]}"
    "$a:ema:dpm-solver:${K[0]}::guidance=1.5:guide=${s[-3]}:guide_ema=0.2"
    "$a:0.2:dpm-solver:${K[0]}::guidance=1.5:guide=${s[-3]}"
    "$a:ema:dpm-solver:${K[0]}::guidance=1.5:guide=$g")
else
  c=("$a:ema:dpm-solver:${K[0]}" "$a:ema:dpm-solver:${K[0]}::guidance=1:guide=$g"
    "$a:ema:dpm-solver:${K[0]}::guidance=0.5:guide=$g" "$a:ema:dpm-solver:${K[1]}::guidance=1:guide=$g:$iv"
    "$a:ema:dpm-solver:${K[2]}")
fi
python3 benchmarks/fid_sweep.py --stats "$W/ref.npz" --inception "$INC" --n "$N" "${DEV[@]}" \
  --json "$OUT/autoguide.json" $(printf -- '--case %s ' "${c[@]}")
stamp done
