#!/usr/bin/env bash
# Improved DDPM (issue 11), the paper's two comparisons on CIFAR-10, one GPU, two arms with the
# same recipe, data and wall-clock budget:
#   fixed:  L_simple (eps MSE), fixed variances            (Ho et al.)
#   hybrid: --learn-sigma --loss hybrid (L_simple + 0.001 L_vlb)   (Nichol & Dhariwal §3.1)
# then for each arm
#   - bits/dim on N_NLL test images with its standard error (the variational bound with the
#     arm's variance: learned for hybrid, small for fixed; NLL_T_SAMPLES > 0 estimates the
#     T-step bound from that many stratified timesteps per image, unbiased, and the error bar
#     then includes the t sampling; NLL_T_SAMPLES=0 computes all T terms);
#   - FID of DDPM on 50 and 100 respaced steps (§4) with each variance the arm has (hybrid:
#     learned, small, large; fixed: small, large), N_FID samples against the train statistics.
# and prints one table. Each run's JSON and log.csv stay under OUT.
#
#   PYTHONPATH=src bash benchmarks/improved_ddpm.sh TRAIN.zip TEST.zip STATS.npz INCEPTION.pt [OUT]
#
# Knobs (environment): MINUTES (training budget per arm, 6), STEPS (cap, 100000), SCHEDULE
# (cosine), N_FID (10000), N_NLL (1000), NLL_T_SAMPLES (100), FID_STEPS ("50 100"),
# ARMS ("fixed hybrid") and PHASES ("train nll fid table") to split the work over several
# calls on one warm machine, PRESET (ddpm-cifar10), SPEED (the CUDA fast-path flags; empty for
# a CPU smoke run), BATCH (128), EXTRA (more `ddpm train` flags for both arms, e.g.
# "--ema-sigma-rel 0.1"). The recipe is the paper's comparison (uniform t, no loss weighting,
# the cosine schedule) with the short-budget settings of docs/benchmarks.md (no dropout, lr
# 5e-4 after 200 warm-up steps).
set -uo pipefail
TRAIN=${1:?usage: improved_ddpm.sh TRAIN.zip TEST.zip STATS.npz INCEPTION.pt [OUT]}
TEST=${2:?test zip}
STATS=${3:?FID statistics .npz}
INCEPTION=${4:?Inception TorchScript file}
DEST=${5:-${OUT:-runs}/improved}
MINUTES=${MINUTES:-6}
STEPS=${STEPS:-100000}
SCHEDULE=${SCHEDULE:-cosine}
N_FID=${N_FID:-10000}
N_NLL=${N_NLL:-1000}
NLL_T_SAMPLES=${NLL_T_SAMPLES:-100}
FID_STEPS=${FID_STEPS:-50 100}
ARMS=${ARMS:-fixed hybrid}
PHASES=${PHASES:-train nll fid table}
PRESET=${PRESET:-ddpm-cifar10}
SPEED=${SPEED---compile --compile-mode reduce-overhead --channels-last}
BATCH=${BATCH:-128}
EXTRA=${EXTRA:-}
mkdir -p "$DEST"
has() { [[ " $PHASES " == *" $1 "* ]]; }
ddpm() { python3 -c "import sys; from ddpm.cli import main; sys.exit(main())" "$@"; }
newest() { ls "$1"/ckpt-*.pt 2>/dev/null | sort | tail -1; }

# shellcheck disable=SC2206
recipe=(--data "cifar10:$TRAIN" --preset "$PRESET" --image-size 32 --batch-size "$BATCH"
  --lr 5e-4 --warmup 200 --steps "$STEPS" --max-minutes "$MINUTES"
  --dropout 0 --schedule "$SCHEDULE" --t-sampling uniform $SPEED $EXTRA --log-every 250
  --sample-every 1000000 --checkpoint-every 1000000 --num-samples 16 --quiet --seed 0)
declare -A ARM_FLAGS=([fixed]="--loss l2" [hybrid]="--learn-sigma --loss hybrid")
declare -A ARM_VARIANCES=([fixed]="small large" [hybrid]="learned small large")
declare -A ARM_NLL_VARIANCE=([fixed]=small [hybrid]=learned)

for arm in $ARMS; do
  if has train; then
    echo "== train $arm: ${ARM_FLAGS[$arm]}, $MINUTES min"
    # shellcheck disable=SC2086
    ddpm train "${recipe[@]}" ${ARM_FLAGS[$arm]} --out "$DEST/$arm" || exit 1
  fi
  has nll || has fid || continue
  ckpt=$(newest "$DEST/$arm")
  [[ -n "$ckpt" ]] || { echo "no checkpoint in $DEST/$arm"; exit 1; }
  if has nll; then
    nll=(--nll --data "cifar10:$TEST" --n "$N_NLL" --batch-size 1000 --quiet)
    [[ "$NLL_T_SAMPLES" != 0 ]] && nll+=(--nll-t-samples "$NLL_T_SAMPLES")
    echo "== $arm: bits/dim"
    ddpm eval --checkpoint "$ckpt" "${nll[@]}" --variance "${ARM_NLL_VARIANCE[$arm]}" \
      --json "$DEST/$arm-nll.json" || exit 1
  fi
  if has fid; then
    for steps in $FID_STEPS; do
      for variance in ${ARM_VARIANCES[$arm]}; do
        echo "== $arm: FID, DDPM $steps respaced steps, variance $variance"
        ddpm eval --checkpoint "$ckpt" --fid-stats "$STATS" --inception "$INCEPTION" \
          --n "$N_FID" --sampler ddpm --steps "$steps" --variance "$variance" --bf16 \
          --batch-size 1000 --quiet --json "$DEST/$arm-fid-$steps-$variance.json" || exit 1
      done
    done
  fi
done

has table || exit 0
python3 - "$DEST" <<'PY'
import csv, json, sys
from pathlib import Path

d = Path(sys.argv[1])
print()
print("| arm | steps trained | bits/dim (± s.e.) | bound | DDPM steps | variance | FID |")
print("|---|---:|---:|---|---:|---|---:|")
for arm in ("fixed", "hybrid"):
    if not (d / arm / "log.csv").exists():
        continue
    log = list(csv.DictReader(open(d / arm / "log.csv")))
    trained = log[-1]["step"] if log else "?"
    bpd, bound = "-", "-"
    if (d / f"{arm}-nll.json").exists():
        nll = json.loads((d / f"{arm}-nll.json").read_text())["nll"]
        k = nll["t_samples"]
        bound = f"T={nll['T']}, {nll['variance']}" + (f", {k} stratified t/image" if k else "")
        bpd = f"{nll['bpd']:.4f} ± {nll['stderr']:.4f} ({nll['n']} images)"
    fids = sorted(d.glob(f"{arm}-fid-*.json"), key=lambda p: (int(p.stem.split("-")[2]), p.stem))
    if not fids:
        print(f"| {arm} | {trained} | {bpd} | {bound} | - | - | - |")
    for f in fids:
        fid = json.loads(f.read_text())["fid"]
        print(f"| {arm} | {trained} | {bpd} | {bound} | {fid['steps']} | {fid['variance']} "
              f"| {fid['fid']:.2f} ({fid['n']}) |")
        bpd, bound = "", ""
PY
