#!/usr/bin/env bash
# End to end: `ddpm train` on CIFAR-10 (a zip of 50,000 images) with the fast path
# (bf16 autocast + channels-last + torch.compile with CUDA graphs), then the same seed in fp32
# eager for the loss comparison. Each output line is prefixed with seconds since the start, so
# data loading and compilation show as gaps; log.csv holds img/s per `--log-every` window.
#
#   PYTHONPATH=src bash benchmarks/train_e2e.sh /path/to/cifar10/train.zip [out-folder]
set -uo pipefail
DATA=${1:?usage: train_e2e.sh DATA.zip [OUT]}
DEST=${2:-${OUT:-runs}/e2e}
STEPS=${STEPS:-1500}
FP32_STEPS=${FP32_STEPS:-600}
mkdir -p "$DEST"
ddpm() { python3 -c "import sys; from ddpm.cli import main; sys.exit(main())" "$@"; }
stamp() { python3 -u -c "import sys, time
t0 = time.time()
for line in sys.stdin: print(f'{time.time() - t0:7.1f} {line}', end='', flush=True)"; }
common=(--data "$DATA" --preset ddpm-cifar10 --image-size 32 --batch-size 128 --lr 2e-4
  --warmup 100 --log-every 100 --sample-every 100000 --checkpoint-every 100000
  --num-samples 16 --quiet --seed 0)
echo "== bf16 + channels-last + compile (reduce-overhead), $STEPS steps"
PYTHONUNBUFFERED=1 ddpm train "${common[@]}" --steps "$STEPS" --compile \
  --compile-mode reduce-overhead --channels-last --out "$DEST/fast" 2>&1 | stamp
cp "$DEST/fast/log.csv" "$DEST/fast_log.csv" 2>/dev/null
echo "== fp32 eager, $FP32_STEPS steps"
PYTHONUNBUFFERED=1 ddpm train "${common[@]}" --steps "$FP32_STEPS" --no-bf16 \
  --out "$DEST/fp32" 2>&1 | stamp
cp "$DEST/fp32/log.csv" "$DEST/fp32_log.csv" 2>/dev/null
python3 - "$DEST" <<'PY'
import csv, sys
from pathlib import Path
d = Path(sys.argv[1])
rows = {k: list(csv.DictReader(open(d / f"{k}_log.csv"))) for k in ("fast", "fp32") if (d / f"{k}_log.csv").exists()}
for k, rs in rows.items():
    speeds = [float(r["img_per_s"]) for r in rs[1:] if r.get("img_per_s")]
    speeds.sort()
    med = speeds[len(speeds) // 2] if speeds else float("nan")
    print(f"{k}: median img/s over windows 2..{len(rs)}: {med:,.0f}")
if len(rows) == 2:
    fp32 = {r["step"]: float(r["loss"]) for r in rows["fp32"]}
    print("step  loss fp32  loss bf16-fast  rel diff")
    for r in rows["fast"]:
        if r["step"] in fp32:
            a, b = fp32[r["step"]], float(r["loss"])
            print(f"{r['step']:>5} {a:10.5f} {b:14.5f} {(b - a) / a:+9.2%}")
PY
