#!/usr/bin/env bash
# Issue 9 on two H100s of one host (nvidia-h100-x2): the whole training step as one CUDA graph
# (`--step-graph`), which the sixth round called for. There the recipe's steps ran at about 30
# a second whatever the batch (batch 64: 1,974 img/s against 3,821 at batch 128), so the host,
# not the GPU, set their pace, and batch 64 made half the images of batch 128 in 8 minutes.
#
#   GPU 0: the step graph's CUDA tests (pytest -m gpu), then --recipe cifar10-8min
#          --step-graph --batch-size 64, 8 minutes, scored with `ddpm eval` (DDIM-50)
#   GPU 1: --recipe cifar10-8min --batch-size 64 without the step graph for 1.8 minutes (its
#          steady img/s beside GPU 0's, on the same host at the same time), then
#          --recipe cifar10-8min --step-graph (batch 128), 8 minutes, scored the same way
#
# Calls, each within 30 s of the last: launch (carry .stage), fid (carry .fid), then
# `wait 560` until both queues say done; each wait brings $OUT/step-graph.tgz.
# CPU smoke test: SMOKE=1 R=/tmp/sg OUT=/tmp/sg-out bash benchmarks/gpu/step_graph.sh launch...
set -u
R=${R:-/root/sg}
C=$R/code
OUT=${OUT:-/tmp/out}
Q=$R/queues
mkdir -p "$R/res" "$Q" "$OUT"
if [[ -n ${SMOKE:-} ]]; then
  MIN=0.1 N=64 DEV=(--device cpu) X=(--preset small --image-size 16 --device cpu) SHORT=0.05
else
  MIN=8 N=10000 DEV=() X=() SHORT=1.8
fi
CIFAR=cifar10:$R/stage/cifar10-train.zip
ddpm() { python3 -m ddpm "$@"; }
stamp() { echo "$(date -u +%T) $*"; }
waitfor() { while [[ ! -e $1 ]]; do sleep 2; done; }
recipe() { ddpm train --recipe cifar10-8min --data "$CIFAR" --max-minutes "$MIN" --quiet "${X[@]}" "$@"; }
score() {  # score NAME: `ddpm eval` of the run's last checkpoint, DDIM-50 with the EMA weights
  waitfor "$R/fid.ready"; stamp "ddpm eval $1"
  local steps=50; [[ -n ${SMOKE:-} ]] && steps=3
  ddpm eval --checkpoint "$R/$1" --fid-stats "$R/fid/cifar10-train-inception-stats.npz" \
    --inception "$R/fid/fid-inception-fp16.pt" --n "$N" --sampler ddim --steps "$steps" \
    --quiet "${DEV[@]}" --json "$R/res/$1-eval.json"
}
q0() {
  if [[ -z ${SMOKE:-} ]]; then
    stamp "CUDA tests"
    (cd "$C" && python3 -m pytest -q -m gpu tests/test_step_graph.py -p no:cacheprovider) || true
  fi
  stamp "step graph, batch 64"; recipe --step-graph --batch-size 64 --out "$R/sg-b64" && score sg-b64
}
q1() {
  stamp "model graphs only, batch 64, $SHORT min"
  recipe --batch-size 64 --max-minutes "$SHORT" --snapshot-minutes 60 --out "$R/mg-b64"
  stamp "step graph, batch 128"; recipe --step-graph --out "$R/sg-b128" && score sg-b128
}
pack() {
  local run; for run in sg-b64 mg-b64 sg-b128; do
    [[ -f $R/$run/log.csv ]] && cp "$R/$run/log.csv" "$R/res/$run-log.csv"
  done
  cp "$Q"/*.log "$R/res/" 2>/dev/null; tar -czf "$OUT/step-graph.tgz" -C "$R" res
}
status() {
  local k; for k in 0 1; do
    local state=running; [[ -e $Q/q$k.done ]] && state=done
    echo "q$k $state: $(grep -E '^[0-9:]{8} |^exit|Error|error|passed|failed' "$Q/q$k.log" 2>/dev/null | tail -n 3 | tr '\n' '|')"
  done
}
export PYTHONPATH=$C/src PYTHONUNBUFFERED=1
case ${1:-} in
launch)
  rm -rf "$C" && mkdir -p "$C" "$R/stage" && cp -r src benchmarks tests pyproject.toml "$C/" && cp .stage/cifar10-train.zip "$R/stage/"
  nvidia-smi --query-gpu=index,name --format=csv,noheader 2>/dev/null
  python3 -c "import torch; print('torch', torch.__version__)"
  for k in 0 1; do setsid bash "$C/benchmarks/gpu/step_graph.sh" queue "$k" </dev/null >/dev/null 2>&1 & done
  sleep 10; status
  ;;
queue)
  export CUDA_VISIBLE_DEVICES=$2; t0=$SECONDS
  "q$2" >"$Q/q$2.log" 2>&1; echo "exit $? after $((SECONDS - t0)) s" >>"$Q/q$2.log"; touch "$Q/q$2.done"
  ;;
fid) mkdir -p "$R/fid" && cp .fid/* "$R/fid/" && touch "$R/fid.ready" && status ;;
wait)
  end=$((SECONDS + ${2:-560}))
  while ((SECONDS < end)) && [[ $(ls "$Q"/*.done 2>/dev/null | wc -l) -lt 2 ]]; do sleep 5; done
  status; pack; ls "$R/res"
  ;;
*) echo "usage: bash benchmarks/gpu/step_graph.sh launch|fid|wait [SECONDS]" >&2; exit 2 ;;
esac
