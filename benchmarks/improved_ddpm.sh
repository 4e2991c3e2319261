#!/usr/bin/env bash
# Improved DDPM (Nichol & Dhariwal 2021), the paper's two comparisons on CIFAR-10, one GPU, two
# arms with the same recipe, data and wall-clock budget:
#   fixed:  L_simple (eps MSE), fixed variances                    (Ho et al.)
#   hybrid: --learn-sigma --loss hybrid (L_simple + 0.001 L_vlb)   (Nichol & Dhariwal §3.1)
# then for each arm
#   - bits/dim on N_NLL test images with its standard error, the variational bound with each
#     variance the arm has (hybrid: learned, small, large; fixed: small, large), so that a gap
#     between the arms splits into mean and variance; NLL_T_SAMPLES > 0 estimates the T-step
#     bound from that many stratified timesteps per image, unbiased, and the error bar then
#     includes the t sampling; NLL_T_SAMPLES=0 computes all T terms;
#   - FID of DDIM-50, and of DDPM on 50 and 100 respaced steps (§4) with each of those
#     variances, N_FID samples against the train statistics, in one benchmarks/fid_sweep.py
#     process (one compiled network for all the arm's cases).
# and prints one table. Each run's JSON and log.csv stay under DEST (default runs/improved).
#
#   MINUTES=8 bash benchmarks/improved_ddpm.sh cifar10/train.zip cifar10/test.zip \
#     cifar10-train-inception-stats.npz fid-inception-fp16.pt [DEST]
#
# Expected (one H100, torch 2.11, 2026-11-27; about 14 minutes an arm with its scoring):
#
#   | arm    | variance | bits/dim        | DDIM-50 | DDPM-50 | DDPM-100 |
#   | fixed  | small    | 2.659 ± 0.026   | 17.20   | 16.51   | 14.30    |
#   | fixed  | large    | 2.791 ± 0.026   |         | 99.02   | 46.94    |
#   | hybrid | learned  | 2.557 ± 0.022   | 19.17   | 15.12   | 14.10    |
#   | hybrid | small    | 2.663 ± 0.026   |         | 17.08   | 15.02    |
#
# Knobs (environment): MINUTES (training budget per arm, 6), STEPS (cap, 100000), SCHEDULE
# (cosine), N_FID (10000), N_NLL (1000), NLL_T_SAMPLES (100), FID_STEPS ("50 100"),
# ARMS ("fixed hybrid") and PHASES ("train nll fid table") to run part of the work, PRESET
# (ddpm-cifar10), SPEED (the CUDA fast-path flags; empty for a CPU smoke run),
# HYBRID_FID_VARIANCES ("learned small large": the variances the hybrid arm is sampled with;
# its bound is computed with all three, which is cheap), BATCH (128), EXTRA (more `ddpm train`
# flags for both arms, e.g. "--ema-sigma-rel 0.1"). The recipe is the paper's comparison
# (uniform t, no loss weighting, the cosine schedule) with short-budget settings (no dropout,
# lr 5e-4 after 200 warm-up steps).
set -uo pipefail
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)/src${PYTHONPATH:+:$PYTHONPATH}"
TRAIN=${1:?usage: improved_ddpm.sh TRAIN.zip TEST.zip STATS.npz INCEPTION.pt [DEST]}
TEST=${2:?test zip}
STATS=${3:?FID statistics .npz}
INCEPTION=${4:?Inception TorchScript file}
DEST=${5:-runs/improved}
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
declare -A FID_VARIANCES=([fixed]="small large" [hybrid]="${HYBRID_FID_VARIANCES:-learned small large}")

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
    for variance in ${ARM_VARIANCES[$arm]}; do
      echo "== $arm: bits/dim, variance $variance"
      ddpm eval --checkpoint "$ckpt" "${nll[@]}" --variance "$variance" \
        --json "$DEST/$arm-nll-$variance.json" || exit 1
    done
  fi
  if has fid; then
    cases=(--case "$ckpt:ema:ddim:50")
    for steps in $FID_STEPS; do
      for variance in ${FID_VARIANCES[$arm]}; do
        cases+=(--case "$ckpt:ema:ddpm:$steps::variance=$variance")
      done
    done
    echo "== $arm: FID, DDIM-50 and DDPM on $FID_STEPS respaced steps"
    python3 "$(dirname "$0")/fid_sweep.py" --stats "$STATS" --inception "$INCEPTION" \
      --n "$N_FID" --json "$DEST/$arm-fid.json" "${cases[@]}" || exit 1
  fi
done

has table || exit 0
python3 - "$DEST" <<'PY'
import csv, json, sys
from pathlib import Path

d = Path(sys.argv[1])
rows, bound = {}, ""
for arm in ("fixed", "hybrid"):
    if not (d / arm / "log.csv").exists():
        continue
    log = list(csv.DictReader(open(d / arm / "log.csv")))
    trained = log[-1]["step"] if log else "?"
    nll = {}
    for f in d.glob(f"{arm}-nll-*.json"):
        n = json.loads(f.read_text())["nll"]
        nll[n["variance"]] = n
        k = n["t_samples"]
        bound = f"T={n['T']} bound, {n['n']} test images"
        bound += f", {k} stratified t each" if k else ""
    fid_json = d / f"{arm}-fid.json"
    fids = json.loads(fid_json.read_text()) if fid_json.exists() else []
    ddim = [r["fid"] for r in fids if r["sampler"] == "ddim"]
    sampled = [r["options"]["variance"] for r in fids if r["options"]]
    variances = list(dict.fromkeys([*sampled, *nll]))
    for v in variances or ["-"]:
        bpd = f"{nll[v]['bpd']:.4f} ± {nll[v]['stderr']:.4f}" if v in nll else "-"
        ddpm = {r["steps"]: r["fid"] for r in fids if r["options"].get("variance") == v}
        rows[(arm, v)] = (trained, bpd, ddpm, ddim[0] if ddim else None)
steps = sorted({k for *_, ddpm, _ in rows.values() for k in ddpm})
print(f"\nbits/dim: {bound or 'not measured'}; FID: DDIM-50, and DDPM on K respaced steps\n")
print("| arm | steps trained | variance | bits/dim (± s.e.) | DDIM-50 |"
      + "".join(f" DDPM-{k} |" for k in steps))
print("|---|---:|---|---:|---:|" + "---:|" * len(steps))
for (arm, v), (trained, bpd, ddpm, ddim) in rows.items():
    cells = "".join(f" {ddpm[k]:.2f} |" if k in ddpm else " - |" for k in steps)
    print(f"| {arm} | {trained} | {v} | {bpd} | {'-' if ddim is None else f'{ddim:.2f}'} |{cells}")
PY
