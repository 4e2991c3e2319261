#!/usr/bin/env bash
# One short call on one GPU that runs every GPU code path once, on generated data, before
# the measured runs: the recipes with the fast path (compile + CUDA graphs), snapshots, the
# few-step samplers in a compiled `ddpm eval`, the diffusers peer and its folders, learned
# variances, class conditioning with guidance, the tutorial's recipe on a Stanford Cars
# layout, DDP under torchrun, and the GPU-marked tests. Steps run in parallel groups; each
# is time-limited and logged, and a failure does not stop the others.
#
#   carry: .smoke (fid-inception-fp16.pt and the diffusers wheel)
#   bash benchmarks/gpu/smoke.sh 2>&1 | tee $OUT/smoke.log     # and $OUT/summary.txt
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
S=/root/smoke
mkdir -p "$S" "$OUT"

pip install -q --no-index --no-deps --no-compile --target /tmp/site .smoke/diffusers-*.whl \
  && export PYTHONPATH=$PYTHONPATH:/tmp/site
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"

ddpm=(python3 -m ddpm.cli)
pids=()
wait_all() { wait "${pids[@]}"; pids=(); }
step() {  # step NAME SECONDS CMD...: run, time, record ok/FAIL
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  if timeout "$limit" "$@" >"$S/$name.log" 2>&1; then r=ok; else r="FAIL($?)"; fi
  echo "$name: $r in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
  tail -n 4 "$S/$name.log" | sed "s/^/  [$name] /"
}

# --- generated data: a CIFAR-like zip (10 classes x 500 random 32x32 JPEGs) and a Stanford
# Cars zip with its devkit (1,024 frames of 96x128)
python3 - <<'EOF'
import sys
sys.path.insert(0, "tests")
from pathlib import Path
from datafixtures import cifar_like_zip, stanford_cars_zip
root = Path("/root/smoke")
cifar_like_zip(root / "cifar.zip", classes=[f"c{i}" for i in range(10)], per_class=500)
stanford_cars_zip(root / "cars", n_train=1024, size=(96, 128))
EOF
D=cifar10:$S/cifar.zip
CARS=stanford-cars:$S/cars/stanford_cars/cars_train_128x96.zip
INC=(--inception .smoke/fid-inception-fp16.pt)
step fid-stats 120 "${ddpm[@]}" fid-stats "$D" -o $S/cifar.npz "${INC[@]}" --quiet

# --- group 1: training with the fast path, three at once
step ours 200 "${ddpm[@]}" train --recipe cifar10-8min --data "$D" --max-minutes 1.2 \
  --snapshot-minutes 0.6,1.2 --out $S/ours --quiet & pids+=($!)
[ -d $S/peer/snapshot-0.8min ] || { step peer 200 python3 benchmarks/peer_quality.py --data "$D" \
  --minutes 1.0 --snapshot-minutes 0.8 --out $S/peer & pids+=($!); }
step tutorial 200 "${ddpm[@]}" train --recipe tutorial --data "$CARS" --epochs 3 --out $S/tut --quiet & pids+=($!)
wait_all

# --- group 2: learned variances, class conditioning, DDP (one process) and cars64-fast
step hybrid 200 "${ddpm[@]}" train --recipe cifar10-8min --data "$D" --learn-sigma --loss hybrid \
  --max-minutes 0.8 --out $S/hybrid --quiet & pids+=($!)
step cond 200 "${ddpm[@]}" train --recipe cifar10-8min --data "$D" --class-cond --max-minutes 0.8 \
  --out $S/cond --quiet & pids+=($!)
step ddp1 200 torchrun --standalone --nproc-per-node 1 -m ddpm train --recipe cifar10-8min \
  --data "$D" --max-minutes 0.8 --out $S/ddp --quiet & pids+=($!)
step cars-fast 200 "${ddpm[@]}" train --recipe cars64-fast --data "$CARS" --resize squash \
  --max-minutes 0.8 --out $S/carsfast --quiet & pids+=($!)
wait_all

# --- group 3: compiled evaluation with each sampler, the peer's folder, guidance, learned
last() { ls "$1"/ckpt-*.pt | tail -n 1; }
E=(--fid-stats $S/cifar.npz "${INC[@]}" --n 1000 --quiet)
step eval-heun 150 "${ddpm[@]}" eval --checkpoint $S/ours/snapshot-1.2min.pt "${E[@]}" --sampler heun --steps 10 & pids+=($!)
step eval-dpm 150 "${ddpm[@]}" eval --checkpoint $S/ours/snapshot-0.6min.pt "${E[@]}" --sampler dpm-solver \
  --steps 10 --spacing trailing --ema 0.05 & pids+=($!)
step eval-peer 150 "${ddpm[@]}" eval --checkpoint $S/peer/snapshot-0.8min "${E[@]}" --steps 20 & pids+=($!)
step eval-learned 150 "${ddpm[@]}" eval --checkpoint "$(last $S/hybrid)" "${E[@]}" --sampler ddpm --steps 50 & pids+=($!)
wait_all
step eval-guided 150 "${ddpm[@]}" eval --checkpoint "$(last $S/cond)" "${E[@]}" --guidance 1 & pids+=($!)
step nll 150 "${ddpm[@]}" eval --checkpoint "$(last $S/hybrid)" --nll --data "$D" --n 64 --nll-t-samples 20 & pids+=($!)
step grid-by-class 150 "${ddpm[@]}" sample --checkpoint "$(last $S/cond)" --grid-by-class --n 4 \
  --guidance 2 --out $S/classes.png & pids+=($!)
step tut-sample 150 "${ddpm[@]}" sample --checkpoint "$(last $S/tut)" --n 64 --sampler ddpm \
  --out $S/tut.png & pids+=($!)
wait_all
step gpu-tests 150 python3 -m pytest -q -m gpu -p no:cacheprovider tests

grep -h "img/s\|img_per_s" $S/ours/log.csv | tail -n 3
tail -n 3 $S/ours/log.csv $S/ddp/log.csv $S/carsfast/log.csv $S/tut/log.csv 2>/dev/null
grep -h "FID\|NLL" $S/eval-*.log $S/nll.log 2>/dev/null
cp $S/classes.png $S/tut.png "$OUT/" 2>/dev/null
cat "$OUT/summary.txt"
