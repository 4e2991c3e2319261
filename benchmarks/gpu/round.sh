#!/usr/bin/env bash
# One measuring round on a 4-GPU machine (nvidia-h100-x4): the open issues' GPU numbers in one
# lease, each GPU working through its own queue in the background while short calls bring the
# inputs and take the results home. A 4-GPU lease counts its held time once for four GPUs, so
# running the issues' independent jobs side by side costs a quarter of running them in turn.
#
#   GPU 0: ours, --recipe cifar10-8min (#9)    -> FID curve 1/2/4/8 min, NFE and DDPM-variance
#          cases, bits/dim (#11 fixed arm)      -> scores both Stanford Cars runs (#10)
#   GPU 1: diffusers' recipe, 8 min (#9 peer)   -> the tutorial's Stanford Cars run, then ours
#          for the same minutes (#10)           -> FID curve of the peer
#   GPU 2: the recipe + --learn-sigma --loss hybrid (#11) -> FID with each variance, bits/dim
#          -> a class-conditional Stanford Cars model for the tutorial's minutes, grid (#12)
#   GPU 3: the recipe + --class-cond --cond-drop 0.1 (#12) -> FID and class accuracy against
#          guidance, class grid -> DDP timing on 1 GPU (#13)
#   then:  DDP timing on 2 and 4 GPUs (#13), when every queue is done.
#
# The calls, each issued as soon as the last returns (the machine goes back 30 s after a call):
#   1. carry .stage (cifar10-train.zip, the diffusers wheel):  bash benchmarks/gpu/round.sh launch
#   2. carry .cars and .test (cifar10 test.zip):                bash benchmarks/gpu/round.sh data
#   3. carry .fid (Inception network, CIFAR-10 train stats):   bash benchmarks/gpu/round.sh fid
#   4. bash benchmarks/gpu/round.sh wait 560   (repeat; each brings $OUT/round.tgz, the results
#      so far, and prints each queue's state)
#   5. bash benchmarks/gpu/round.sh ddp        (after every queue says done; CASES=cifar10 for
#      one case when time is short)
#
# Seen on 2026-11-27 (4x H100, torch 2.11; docs/benchmarks.md has the numbers): start 60 s;
# the trainings 8.4 min with decoding; then sweep A 18.8 min with its bits/dim (about 100 s of
# compiling, 35-175 s a case: DDPM-100 and cases scored while three other GPUs also compile are
# the slow ones), the peer's 4 cases 8.7 min, the guidance sweep and class grids 13.8 min, the
# cars trainings 7 min: the queues needed about 31 minutes, more than a 30-minute budget holds.
# Cars scoring and the DDP tail did not fit; give them a round of their own.
#
# PLAN=rest (given to `launch`) is the second round, what the first left: the DDP timings at
# 1, 2 and 4 GPUs first, on an idle host; then, side by side, the tutorial's Stanford Cars run
# (GPU 0) and ours for the tutorial's measured 2.8 minutes (GPU 1, CARS_MINUTES), both scored
# against the 8,144 photos, then the DDP loss comparison on GPUs 0 and 1 (1 GPU at batch 256
# against 2 at 128 each); and the paper's improved-DDPM comparison (benchmarks/improved_ddpm.sh:
# no loss weighting, cosine schedule), fixed (GPU 2) against learned + hybrid (GPU 3), each
# arm's bits/dim with each of its variances and its respaced-DDPM FIDs (the hybrid arm sampled
# with learned and small variances: the large one's collapse is the fixed arm's to show). After
# the DDP timings each queue runs on its own quarter of the host's cores. Same calls as above,
# with `PLAN=rest bash benchmarks/gpu/round.sh launch` first (and CASES=cifar10 there to time
# one DDP case: each case and world size compiles for 1.5-2 minutes; with one case the round
# should take about 25 minutes). Ran end to end on the CPU (SMOKE=1) on 2026-11-27.
#
# Seen in that second round (2026-11-27, 12:14-12:41 UTC; docs/benchmarks.md): start 60 s, the
# DDP timings of one case 4.7 minutes, the cars runs and their scoring 5-6 minutes, the loss
# comparison 4 minutes, each improved-DDPM arm 13.6 minutes (8 training, 0.8 bits/dim, 4.5 FID):
# the queues were done 19.6 minutes after the launch. Pinned to 16 cores, one FID-10k case took
# 35-68 s (against 35-175 s unpinned in the first round). The cars64 DDP timings afterwards
# needed more than the 7.5 minutes left: 128 and 119 s of compile per world size.
#
# PLAN=third is what the second left, and three runs for issue 9:
# first the cars64 DDP timing at 1 and 4 GPUs on the idle host (#13's last row); then GPU 0 the
# tutorial's cars run and GPU 1 ours (cars64-fast) for the tutorial's 2.22 minutes (measured in
# the second round; CARS_MINUTES), each scored, then two candidates for the same minutes (#10):
# the tutorial's own SimpleUnet with our training and then cars64-fast without CUDA graphs (a
# shorter compile), both on GPU 1; three runs of the cifar10-8min recipe for issue 9, each
# scored with its EMA lengths 0.05, 0.1 and 0.2 and with DPM-Solver++(2M) at 50 steps: as it is
# (the control, GPU 2), at 96 channels instead of 128 (GPU 3; predicted ~1.6x the steps, FID
# within 1 of the control, better or worse) and at twice its learning rate, 8e-4 (GPU 0 after
# the tutorial's run; predicted within 1 of the control). About 25 minutes. Launch it with
# `PLAN=third CASES=cars64 DDP_GPUS=1,4 bash benchmarks/gpu/round.sh launch`, then the same
# data, fid and wait calls. (CPU smoke: as below, with PLAN=third CASES=tiny.)
#
# Seen in the third round (2026-11-27, 13:32-13:58 UTC): start 60 s, the cars64 DDP timings at 1
# and 4 GPUs 4.6 minutes, the cars queue (four runs and their scoring) 17 minutes, each issue-9
# run 16 minutes (8 training, about 8 scoring four cases: the first compiles the sampler for
# 85 s); GPU 0's two jobs were done 25 minutes after the launch. Held 1,283 s in all.
#
# PLAN=fifth (run 2026-11-27, 15:43-16:04 UTC; a fourth plan, which timed the compile scopes
# on their own, was dropped for it unrun): GPU 2 runs the tutorial's cars run, and its loop's
# minutes go to every issue-10 candidate (cars64-fast variants: one residual block a level,
# regional compile, batch 64, no compile...). The queues take the candidates in order as they
# come free (a claim is a directory), until CAND_DEADLINE seconds after the launch; each is
# scored with DDIM-50, DPM-Solver-20 and DDPM-100 in one process. GPU 1 trains the recipe and
# scores it with DDIM at 50/100/200 steps and DPM-Solver++(2M) at 10/20/50 (trailing); GPU 3
# the recipe with --compile-scope blocks. Both then take candidates. Launch with
# `PLAN=fifth CAND_DEADLINE=1000 bash benchmarks/gpu/round.sh launch`, then data, fid and
# wait. Seen: the queues were done 21 minutes after the launch, eight candidates in all;
# held 1,294 s with two waits.
#
# PLAN=sixth (about 15 minutes): issue 9 alone, four arms in a chain, each the cifar10-8min
# recipe plus one change against the arm before it. GPU 0: the recipe as it is now (the
# learning-rate decay starts after the warm-up; predicted within 0.5 of 14.49). GPU 3: batch
# 64 (predicted 1.6x the steps, FID 13-14). GPU 1: batch 64 and one residual block a level
# (24.3M parameters; issue 10's winner: predicted 2.5x the steps, FID 11-13). GPU 2: that and
# EDM's choices we have (v-prediction, log-normal noise levels, EDM's weighting; predicted
# within 1 of GPU 1). Each arm: FID at 1/2/4/8 minutes (DDIM-50), DPM-Solver-20 at 8, and
# `ddpm eval` of the 8-minute checkpoint. Calls: `PLAN=sixth bash benchmarks/gpu/round.sh
# launch` (carry .stage), then fid (carry .fid) and wait; no data call.
# Seen (2026-11-27, 17:44-17:58 UTC): the queues were done 14.5 minutes after the launch; held
# 931 s with two waits. Every arm was host-bound (about 30 steps a second at either batch
# size), which led to --step-graph and benchmarks/gpu/step_graph.sh.
#
# PLAN=seventh (about 16 minutes): what the step graph's runs left. GPU 0: the cifar10-8min
# recipe as it is now (with --step-graph): its 1/2/4/8-minute curve for the README, and
# DPM-Solver++(2M) at 10, 20 and 50 and DDIM-20 at 8 minutes. GPU 1: the same with the
# model's own CUDA graphs (--no-step-graph), beside it on the same host: the step graph's
# speed ratio at batch 128 and a repeat of its FID gain (predicted 1.05-1.25x the img/s, FID
# 0.3-1.5 better). GPU 2: the tutorial's Stanford Cars run, which sets the minutes; then GPUs
# 2 and 3 run --recipe cars64-2min for those minutes with and without --step-graph, each
# scored with DDIM-50, DPM-Solver-20 and DDPM-100 (predicted: at batch 64 the step graph
# makes 1.3-1.7x the steps and a lower FID). Calls: launch (carry .stage), data (carry .cars
# and .test), fid (carry .fid), then wait.
#
# PLAN=eighth (about 15 minutes; replaces the unrun seventh, whose Stanford Cars half had no
# open issue left): issue 9 alone, each arm 8 minutes with the step graph. GPU 0: the recipe as
# it is, its 1/2/4/8-minute curve for the README, DPM-Solver-20 and `ddpm eval` of the
# 8-minute checkpoint (predicted 13.5-14.5). GPU 1: diffusers' recipe given the step graph too
# (benchmarks/peer_quality.py --step-graph, cosine over PEER_STEPS), its curve, then DDIM at
# 10 and 20 and DPM-Solver at 10 and 50 on GPU 0's checkpoint (the NFE curve). GPU 2: the
# recipe with one residual block a level (24.3M parameters; predicted 1.3-1.4x the steps now
# that the step is not host-bound, FID 12.5-14), then the step graph's CUDA tests. GPU 3: the
# recipe with adaptive GroupNorm (--scale-shift; predicted 0.5-1.5 better than GPU 0 at about
# the same steps). Calls: launch (carry .stage), fid (carry .fid), then wait; no data call.
# Seen (2026-11-27, 20:01-20:16 UTC): the queues were done 14.7 minutes after the launch; held
# 1,112 s with two waits, of which about 200 s were a first launch lost when the machine went
# back between the launch and fid calls (the fid call started a fresh one; launch again at
# once if a call says warm: false). FIDs in docs/benchmarks.md. The recipe took both changes
# afterwards, so run now GPU 0 measures the new recipe and GPUs 2 and 3 repeat it.
#
# PLAN=ninth: one arm on a one-GPU machine, `PLAN=ninth QUEUES=0 ARM_NAME=NAME ARM_FLAGS="..."
# bash benchmarks/gpu/round.sh launch` (carry .stage), then fid (carry .fid), then wait.
# (In the run below the wait calls lacked ARM_NAME, then needed, and left the training log
# behind; launch now writes it down for them.) `ddpm eval` of the
# 8-minute checkpoint comes first, then the curve and DPM-Solver-20. Seen (20:20-20:31 UTC,
# ARM_FLAGS="--num-res-blocks 1 --scale-shift", the recipe now): start 60 s, training and
# decoding 8.5 minutes, `ddpm eval` 80 s; the curve needs about 4 minutes more, which the
# session's device time did not hold. Next: ARM_NAME=c10-recipe with no flags, for the
# recipe's own 1/2/4/8-minute curve and grid (about 14.5 minutes held).
#
# PLAN=tenth (written 2026-11-27 after the eighth round; about 20 minutes): the recipe now
# (one block a level, adaptive GroupNorm) and five levers in two waves. GPU 0: the recipe with
# EMAs 0.05 and 0.2 kept: its 1/2/4/8-minute curve and grid for the README, `ddpm eval`
# (predicted 12.6-13.2), EMA 0.05 and 0.2 at 8 minutes (predicted 0.2-1 worse than 0.1).
# Each lever is scored at 4 and 8 minutes only, so that two fit one after the other:
# GPU 1: --adam-beta2 0.99 (predicted within 0.5 of GPU 0), then everything at once (below).
# GPU 2: that and --lr 6e-4 --warmup 1000 (predicted 0.3-1.0 below GPU 0, if it does not
# diverge as 8e-4 did with beta2 0.999), then beta2 0.99 with --lr 8e-4 --warmup 1000.
# GPU 3: --attention-levels none, attention only in the middle block (predicted 1.15-1.3x the
# steps, FID within 0.7 of GPU 0), then DDIM and DPM-Solver at 10, 20 and 50 on GPU 0's
# checkpoint (the NFE curve). GPU 1's second lever is all three: middle-only attention, beta2
# 0.99, lr 6e-4. Calls: launch (carry .stage), fid (carry .fid), then wait.
# Seen (2026-11-27, 22:01-22:22 UTC, held 1,235 s; docs/benchmarks.md): start 60 s, the first
# wave's training 8.5 minutes with 71-77 s of compile, a lever's two FIDs 1.5 minutes, the
# second wave's compile 8.5-9 s (inductor's cache, warm from the first wave), the recipe's
# queue 14 minutes, the second wave done 20 minutes after the launch. The recipe's grid was
# lost to a wrong --grid index (fid_sweep now refuses one).
#
# PLAN=twelfth (written 2026-11-27 in the twelfth session, rewritten after its first run was
# lost; about 18 minutes): guidance within the target's 50 network evaluations, which counts
# two for each guided step. GPU 0: the recipe, its curve, grid and `ddpm eval` (predicted
# 12.6-13.1), then `ddpm eval` and a grid of the best case within 50 evaluations
# (benchmarks/best_case.py) of the autoguidance sweeps. GPUs 2 and 3 each train a lever and,
# once GPU 0's model is trained, run half of the autoguidance sweep on it (Karras et al.
# 2024; the guide is the run's own 4-minute snapshot, its 2-minute one or its 0.2 EMA;
# DPM-Solver++(2M) at 25 steps guided, 50 evaluations: predicted 10.5-12 at w = 1 against
# about 14 unguided at 25 steps; w 1.5 and 2 not predicted; the 2-minute guide and the 0.2
# EMA worse than the 4-minute one; 30 steps guided only in sigma (0.28, 5.42], 45
# evaluations, level or better), then score their lever at 4 and 8 minutes. GPU 2's lever:
# Min-SNR gamma 2 instead of 5 (predicted 0-0.7 worse). GPU 3's: batch 256, lr 6e-4, warm-up
# 250 (predicted 0.55x the steps at 1.1x the img/s, FID 12.5-14). GPU 1: the recipe
# class-conditional (labels dropped with p 0.1): DPM-Solver-50 unguided (predicted
# 10.9-11.5), classifier-free guidance at 25 steps w 0.5 and 1 (9.5-11), at 30 steps with
# the interval w 1 and 2 (9-10.5), autoguidance by its 4-minute snapshot; then `ddpm eval`
# and a grid of its best. Calls: launch (carry .stage), fid (carry .fid), then wait, each
# wait issued alone and at once (the machine goes back 30 s after a call).
# Seen in its first run (2026-11-27, 23:25-23:37 UTC, when GPU 3 ran the recipe for 16
# minutes and GPU 2 batch 256 and the whole sweep): lost after the first wait, when a local
# command issued beside it kept the machine idle past its 30 s (docs/benchmarks.md). Came
# back: the recipe 22,737 steps, DPM-Solver-25 13.93; batch 256 7,917 img/s against 7,005;
# GPU 3 slowed to 2,500 img/s (unexplained), so the 16-minute point is dropped. A 3-minute
# probe afterwards (benchmarks/gpu/autoguide_probe.sh) found autoguidance w = 1 20% better
# than 50 unguided steps and better than w = 0.5, so the sweep now tries w 1, 1.5 and 2.
#
# PLAN=thirteenth (written 2026-11-28 in the thirteenth session, after the twelfth's second
# run was lost the same way, at the gap after a long wait, with nothing local beside it): a
# probe that session (benchmarks/gpu/autoguide_probe.sh PROBE=weights: 3 minutes) found that
# the guide's age decides it. Its 2-minute snapshot, at 47% of the run's steps, helps (FID
# 19.77 and 19.43 at w 1 and 1.5 against 25.78 unguided); its 1.5-minute one, at 21% (the
# first 75 s are compiling), hurts (27.05); w 2 is past the best (21.14). In the 8-minute
# recipe the 4-minute snapshot is at 42% of the steps, the 3-minute one at 28%, 5.33 at 62%.
# All four GPUs train the recipe, seeds 0-3, with snapshots at 3 and 5.33 minutes beside the
# curve's 1/2/4/8, and each scores its own 8-minute model. GPU 0: the predicted best as a
# user runs it, `ddpm eval` and `ddpm sample` with DPM-Solver++(2M) at 25 steps guided (w
# 1.5) by the 4-minute snapshot (predicted 10-11: the probe's 20-25% on the recipe's 12.6-13.9
# at 50 and 25 unguided steps), then DPM-Solver-50 and DDIM-50 unguided and w 1, then `ddpm
# eval` and a grid of the best case of all four seeds within 50 evaluations. GPU 1: w 1 and
# 1.5 by 4, w 1.5 by 5.33; GPU 2: w 1.5 and 2 by 4, w 1 by 5.33; GPU 3: w 1.5 by 4 and by 3,
# and by 4 only in sigma (0.28, 5.42] at 30 steps (45 evaluations). Each also scores
# DPM-Solver-50 unguided, the control, and repeats w 1.5 by 4 (the spread between seeds).
# About 15 minutes. The calls, to leave one gap after a long call: launch (carry .stage);
# then `fid` and the first wait in one call (carry .fid):
#   PLAN=thirteenth bash benchmarks/gpu/round.sh fid; PLAN=thirteenth bash benchmarks/gpu/round.sh wait 570
# then `wait 560`, issued alone and at once. GPU 0's `ddpm eval` should be done within the
# second call (training and its compile about 8.3 minutes, the eval about 2).
#
# Seen (2026-11-28, 03:00-03:21 UTC; docs/benchmarks.md): GPU 0's `ddpm eval` of the predicted
# best came back inside the fid+wait call, **FID-10k 10.12** (seed 0, 22,140 steps), and seed
# 3's DPM-Solver-50 12.39; then the machine went back in the gap after that 573 s call, as in
# the twelfth round, and the rest (the grid, the other seeds, the sweeps) was lost.
#
# PLAN=fourteenth (written 2026-11-28 in the fourteenth session): the same four seeds of the
# recipe, with the guided case first on every GPU, so four repeats of w 1.5 by the 4-minute
# snapshot at 25 steps give the spread between seeds (predicted: 9.8-10.6, centred near the
# thirteenth's 10.12). GPU 0 also writes that case's grid (`ddpm sample`), the recipe's own
# grid #9 lacks, and scores w 1.25 and 1.75. A probe the same session (autoguide_probe.sh
# PROBE=ema: 18.96 for the reference case) found the guide's 0.2 EMA worse (20.58), a guide
# at 74% of the steps worse (22.36) and the main model's 0.2 EMA much worse (29.22), so the
# guides beside the 4-minute one are at 3.5 and 4.5 minutes (G_LO, G_HI: about 35% and 49%
# of the steps) and seed 1 also keeps a 0.05 EMA for the guide. GPU 1: the 4.5-minute guide
# and the 4-minute guide's 0.05 EMA; GPU 2: the 3.5-minute guide and DPM-Solver++(3M); GPU
# 3: the interval (0.28, 5.42] at 30 steps with w 1.5 and 2. Each also scores DPM-Solver-50
# unguided, the control. Predictions: w 1.25 and 1.75 within 0.3 of 1.5; the 3.5 and
# 4.5-minute guides within 0.3 of the 4-minute one; the guide's 0.05 EMA better by up to
# 0.5 (the 0.2 was 1.6 worse in the probe); 3M level with 2M. The calls, with every call
# under 400 s of waiting (two rounds lost their machine in the gap after the first call of
# 560-573 s; whether long calls are the cause is unknown):
#   1. carry .stage: PLAN=fourteenth bash benchmarks/gpu/round.sh launch
#   2. carry .fid:   PLAN=fourteenth bash benchmarks/gpu/round.sh fid; PLAN=fourteenth bash benchmarks/gpu/round.sh wait 400
#   3, 4, ...:       PLAN=fourteenth bash benchmarks/gpu/round.sh wait 400   (each alone, at once)
# About 17 minutes: training with its compile 8.3, the first guided eval at about 9.5, the
# sweeps about 14, the best of all about 16.
#
# Seen (2026-11-28, 05:11-05:26 UTC, fifteenth session; docs/benchmarks.md): nothing lost, with
# each call issued within seconds of the last. The guided case on the four seeds: 9.30 (`ddpm
# eval`), 9.55, 8.53, 9.08 (median 9.19; predicted 9.8-10.6); DPM-Solver-50 unguided 12.10-12.56.
# w 1.25 9.32 and 1.75 9.56 (seed 0); guides at 3.5 and 4.5 minutes 9.21 and 9.68 (against 8.53
# and 9.55 at 4); the guide's 0.05 EMA 10.05 (against 9.55); the interval at 30 steps 10.31 and
# 10.10 (w 1.5, 2); DPM-Solver++(3M) guided 8.21 (`ddpm eval`: 8.21) against 8.53 for (2M).
#
# PLAN=fifteenth (written 2026-11-28 in the fifteenth session, with the 888 s the fourteenth
# left): seeds 4-7 of the recipe; each scores DPM-Solver++(3M) and (2M) at 25 steps guided (w
# 1.5 by its 4-minute snapshot), then one case: guided 3M at 10 steps (20 evaluations, seed 4),
# at 5 (10, seed 5), at 15 (30, seed 6), and at 25 steps with w 1.25 (seed 7). Predictions:
# (2M) 8.5-9.6 as on seeds 0-3; (3M) better by 0-0.4 on each seed; 30 evaluations 9.5-10.5,
# 20 evaluations 12-15 (unguided DPM-Solver-20 is 15.1), 10 evaluations 25-45 (unguided 20.5:
# guidance may hurt at 5 steps); w 1.25 within 0.3 of 1.5. About 11 minutes. Calls: launch
# (carry .stage); `fid` and `wait 540` in one call (carry .fid); `wait 300`, at once.
#
# Seen (2026-11-28, 05:39-05:51 UTC): (3M) guided 9.14, 9.60, 9.42, 8.39 on seeds 4-7, against
# (2M) 9.50, 10.14, 9.75, 8.82: 0.33-0.54 better on each. 3M guided at 10, 20 and 30
# evaluations 35.96, 16.83, 12.04; w 1.25 8.50 against 8.39. Trained 22,915-23,033 steps.
# The `fid` call only fit the 64 MiB upload with docs/ moved out of the tree for it.
#
# A CPU smoke test of the whole round (tiny models, minutes of seconds):
#   SMOKE=1 R=/tmp/round OUT=/tmp/round-out bash benchmarks/gpu/round.sh launch, data, fid, wait
set -u
R=${R:-/root/round}           # everything the round writes
C=$R/code                     # the code, copied once (calls re-sync the checkout under it)
OUT=${OUT:-/tmp/out}
Q=$R/queues
mkdir -p "$R/res" "$Q" "$OUT"

if [[ -n "${SMOKE:-}" ]]; then  # tiny everything, on the CPU
  CARS_MINUTES=${CARS_MINUTES:-0.1}
  MIN=${MIN:-0.1} N=${N:-64} NC=${NC:-32} NNLL=${NNLL:-8} DEV=(--device cpu)
  SNAPS=0.02,0.05,0.08,0.1 X=(--preset small --image-size 16 --batch-size 8 --device cpu)
  PEER=(--minutes "$MIN" --snapshot-minutes 0.05,0.1 --batch-size 8 --no-compile)
  GUIDE=(--classifier-epochs 1 --classifier-width 8 --batch-size 16)
  TUT=(--epochs 0.02 --device cpu --batch-size 8) DDP=(--device cpu --cases tiny --steps 2 --warmup 1)
  LOSS=(--device cpu --loss-preset small --loss-steps 4 --loss-batch 8)
else
  CARS_MINUTES=${CARS_MINUTES:-2.796}  # the tutorial run's minutes in the first round
  [[ ${PLAN:-} == third ]] && CARS_MINUTES=${CARS_MINUTES_THIRD:-2.22}  # ... in the second
  MIN=${MIN:-8} N=${N:-10000} NC=${NC:-8144} NNLL=${NNLL:-1000} DEV=()
  SNAPS=1,2,4,8 X=() PEER=(--minutes "$MIN" --snapshot-minutes "$SNAPS") GUIDE=() TUT=()
  DDP=(--cases cifar10,cars64) LOSS=()
fi
PLAN=${PLAN:-first}            # first: the round of 2026-11-27; rest: what it left
STATS=(--stats "$R/fid/cifar10-train-inception-stats.npz" --inception "$R/fid/fid-inception-fp16.pt")
CIFAR=cifar10:$R/stage/cifar10-train.zip
CARS=stanford-cars:$R/cars/stanford_cars/cars_train_128x96.zip
ddpm() { python3 -m ddpm "$@"; }
sweep() { python3 "$C/benchmarks/fid_sweep.py" "${STATS[@]}" --n "$N" "${DEV[@]}" "$@"; }
waitfor() {  # waitfor FILE: until it exists (an hour at most: a failed queue stops its waiters)
  local end=$((SECONDS + 3600))
  while [[ ! -e $1 ]]; do ((SECONDS < end)) || return 1; sleep 2; done
}
stamp() { echo "$(date -u +%T) $*"; }
# the recipe, 8 minutes, snapshots at 1/2/4/8 (and the last one named for its minutes)
recipe() { ddpm train --recipe cifar10-8min --data "$CIFAR" --max-minutes "$MIN" \
  --snapshot-minutes "$SNAPS" --quiet "${X[@]}" "$@"; }
timed_snapshots() {  # "MINUTES PATH" of a run's snapshots (our .pt files, the peer's folders)
  local f m; for f in "$1"/snapshot-*min "$1"/snapshot-*min.pt; do
    [[ -e $f ]] || continue; m=${f##*snapshot-}; m=${m%.pt}; echo "${m%min} $f"
  done | sort -g
}
snapshots() { timed_snapshots "$1" | cut -d' ' -f2-; }  # a run's snapshots, by minutes
curve() {  # curve RUN NAME [--case ...]: DDIM-50 of each snapshot (a grid of the last), and more
  local run=$1 name=$2 s cases=(); shift 2
  while read -r s; do cases+=(--case "$s:ema:ddim:50"); done < <(snapshots "$run")
  # (cases holds two words a snapshot, --case and its spec: the last snapshot is case n/2 - 1)
  sweep --json "$R/res/$name-sweep.json" \
    --grid "$((${#cases[@]} / 2 - 1)):$R/res/$name-samples.png" "${cases[@]}" "$@"
}
last() { snapshots "$1" | tail -1; }
cars_sh() {  # cars_sh train|score VAR=VALUE...: benchmarks/gpu/cars.sh on this round's folders
  local what=$1; shift
  (cd "$C" && env OUT="$R/res/cars" R="$R/cars" "$@" bash benchmarks/gpu/cars.sh "$what")
}
cars_classes=("AM General Hummer SUV 2000" "Bugatti Veyron 16.4 Coupe 2009"
  "Ford F-150 Regular Cab 2012" "Lamborghini Aventador Coupe 2012"
  "Chevrolet Express Cargo Van 2007" "Jeep Wrangler SUV 2012" "smart fortwo Convertible 2012"
  "Volkswagen Beetle Hatchback 2012")

bits_per_dim() {  # bits_per_dim CHECKPOINT VARIANCE NAME: the bound on the CIFAR-10 test images
  stamp "bits/dim $3"
  ddpm eval --checkpoint "$1" --nll --data "cifar10:$R/test.zip" --n "$NNLL" \
    --nll-t-samples 100 --variance "$2" --quiet "${DEV[@]}" --json "$R/res/$3-nll.json"
}

q0() {
  stamp "train ours (A)"; recipe --out "$R/A" || return
  waitfor "$R/fid.ready"; local a; a=$(last "$R/A")
  stamp "sweep A"
  curve "$R/A" A --case "$a:ema:ddim:10" --case "$a:ema:ddim:20" \
    --case "$a:ema:dpm-solver:10" --case "$a:ema:dpm-solver:20" \
    --case "$a:ema:ddpm:50::variance=small" --case "$a:ema:ddpm:50::variance=large" \
    --case "$a:ema:ddpm:100::variance=small" --case "$a:ema:ddpm:100::variance=large"
  bits_per_dim "$a" small A
  waitfor "$R/cars-trained"
  stamp "score Stanford Cars"
  cars_sh score N="$NC" INCEPTION="$R/fid/fid-inception-fp16.pt" EVAL_ARGS="${DEV[*]}"
}

q1() {
  stamp "train the peer (B)"
  python3 "$C/benchmarks/peer_quality.py" --data "$CIFAR" --out "$R/B" "${PEER[@]}" || return
  waitfor "$R/cars.ready"
  stamp "Stanford Cars: the tutorial's recipe, then ours"
  cars_sh train TRAIN_ARGS="${TUT[*]}" && touch "$R/cars-trained"
  waitfor "$R/fid.ready"
  stamp "sweep B"
  curve "$R/B" B
}

q2() {
  stamp "train learned variances + hybrid loss (C)"
  recipe --learn-sigma --loss hybrid --out "$R/C" || return
  waitfor "$R/fid.ready"; local c; c=$(last "$R/C")
  stamp "sweep C"
  sweep --json "$R/res/C-sweep.json" --case "$c:ema:ddim:50" \
    --case "$c:ema:ddpm:50::variance=learned" --case "$c:ema:ddpm:50::variance=small" \
    --case "$c:ema:ddpm:50::variance=large" --case "$c:ema:ddpm:100::variance=learned" \
    --case "$c:ema:ddpm:100::variance=small" --case "$c:ema:ddpm:100::variance=large"
  bits_per_dim "$c" learned C
  waitfor "$R/res/cars/minutes.txt"
  local m; m=$(awk '{print $3}' "$R/res/cars/minutes.txt")
  stamp "Stanford Cars, class-conditional, $m min"
  ddpm train --recipe cars64-fast --data "$CARS" --resize squash --max-minutes "$m" \
    --class-cond --cond-drop 0.1 --out "$R/cars-cond" --quiet "${TUT[@]}" || return
  local k=() name; for name in "${cars_classes[@]}"; do k+=(--class "$name"); done
  ddpm sample --checkpoint "$R/cars-cond" --grid-by-class --n 8 --guidance 3 "${k[@]}" \
    --out "$R/res/cars-classes.png" --quiet "${DEV[@]}"
  waitfor "$R/cars/cars64.npz"
  for w in 0 3; do
    ddpm eval --checkpoint "$R/cars-cond" --fid-stats "$R/cars/cars64.npz" \
      --inception "$R/fid/fid-inception-fp16.pt" --n "$NC" --sampler ddim --steps 50 \
      --classes data --guidance $w --quiet "${DEV[@]}" --json "$R/res/cars-cond-w$w.json"
  done
}

q3() {
  stamp "train class-conditional (D)"
  recipe --class-cond --cond-drop 0.1 --out "$R/D" || return
  waitfor "$R/fid.ready"; waitfor "$R/test.zip"; local d; d=$(last "$R/D")
  stamp "guidance sweep D"
  python3 "$C/benchmarks/guidance_sweep.py" --checkpoint "$d" --train-zip "$R/stage/cifar10-train.zip" \
    --test-zip "$R/test.zip" --fid-stats "$R/fid/cifar10-train-inception-stats.npz" \
    --inception "$R/fid/fid-inception-fp16.pt" --n "$N" --null-row "${DEV[@]}" "${GUIDE[@]}" \
    --json "$R/res/D-guidance.json"
  for w in 0 2; do
    ddpm sample --checkpoint "$d" --grid-by-class --n 10 --guidance $w --no-compile \
      --out "$R/res/cifar10-classes-w$w.png" --quiet "${DEV[@]}"
  done
  stamp "DDP timing, 1 GPU"
  python3 "$C/benchmarks/ddp_scaling.py" --gpus 1 --keep --out "$R/res/ddp" "${DDP[@]}"
}

# PLAN=rest: the second round
ddp_first() {  # queue 0 times DDP on all four GPUs while the others wait for it
  if [[ $1 == 0 ]]; then
    stamp "DDP timing, ${DDP_GPUS:-1,2,4} GPUs"
    CUDA_VISIBLE_DEVICES=0,1,2,3 python3 "$C/benchmarks/ddp_scaling.py" --gpus "${DDP_GPUS:-1,2,4}" \
      --out "$R/res/ddp" "${DDP[@]}" ${CASES:+--cases "$CASES"}
    touch "$R/ddp.done"
  fi
  waitfor "$R/ddp.done"
}
minutes_of() {  # minutes_of LOG.CSV: a run's training-loop minutes (the sum of its windows)
  python3 -c "import csv,sys; print(sum(float(r['seconds']) for r in csv.DictReader(open(sys.argv[1]))) / 60)" "$1"
}
cars_stats() {  # the 8,144 photos' statistics, written under another name and then moved
  ddpm fid-stats "$CARS" --image-size 64 --resize squash -o "$R/cars/cars64-part.npz" \
    --inception "$R/fid/fid-inception-fp16.pt" --quiet "${DEV[@]}" &&
    mv "$R/cars/cars64-part.npz" "$R/cars/cars64.npz"
}
cars_run() {  # cars_run NAME TRAIN-FLAGS...: train, then FID against the photos and a grid
  local name=$1; shift
  waitfor "$R/cars.ready"; mkdir -p "$R/res/cars"
  stamp "Stanford Cars: $name"
  ddpm train --data "$CARS" --out "$R/cars/$name" --quiet "${TUT[@]}" "$@" || return
  if [[ $name == tutorial ]]; then  # its minutes, for the runs given as many (PLAN=fifth on)
    minutes_of "$R/cars/tutorial/log.csv" >"$R/cars/minutes.part" &&
      mv "$R/cars/minutes.part" "$R/cars/minutes.txt"
    waitfor "$R/fid.ready"; cars_stats || return
  fi
  waitfor "$R/cars/cars64.npz"
  local sampler=(--sampler ddim --steps 50); [[ $name == tutorial ]] && sampler=(--sampler ddpm)
  [[ -n ${SMOKE:-} ]] && sampler+=(--steps 3)
  ddpm eval --checkpoint "$R/cars/$name" --fid-stats "$R/cars/cars64.npz" \
    --inception "$R/fid/fid-inception-fp16.pt" --n "$NC" "${sampler[@]}" --quiet "${DEV[@]}" \
    --json "$R/res/cars/$name-fid.json"
  ddpm sample --checkpoint "$R/cars/$name" --n 64 "${sampler[@]}" --out "$R/res/cars/$name.png" \
    --quiet "${DEV[@]}"
}
improved_arm() {  # improved_arm fixed|hybrid: benchmarks/improved_ddpm.sh's arm, trained, scored
  local arm=$1 dest=$R/improved
  local script=(env MINUTES="$MIN" ARMS="$arm" N_FID="$N" N_NLL="$NNLL" bash
    "$C/benchmarks/improved_ddpm.sh" "$R/stage/cifar10-train.zip" "$R/test.zip" "${STATS[1]}"
    "${STATS[3]}" "$dest")
  [[ -n ${SMOKE:-} ]] && script=(env SPEED= PRESET=small EXTRA="--image-size 16 --device cpu"
    "${script[@]:1}")
  stamp "improved DDPM, $arm arm"
  PHASES=train "${script[@]}" || return
  waitfor "$R/fid.ready"; waitfor "$R/test.zip"
  PHASES="nll fid table" "${script[@]}"
  cp "$dest/$arm-"*.json "$R/res/"; cp "$dest/$arm/log.csv" "$R/res/improved-$arm-log.csv"
}
pin() {  # pin CORES...: this queue (and what it starts) to those quarters of the host's cores
  local n=$(($(nproc) / 4)) list=() k
  ((n > 0)) || return 0
  for k in "$@"; do list+=("$((k * n))-$((k * n + n - 1))"); done
  taskset -pc "$(IFS=,; echo "${list[*]}")" $BASHPID >/dev/null
}
ddp_loss() {  # the 2-GPU loss against the 1-GPU loss at global batch 256, on GPUs 0 and 1
  waitfor "$R/cars-ours.done"; pin 0 1
  stamp "DDP loss comparison, 1 and 2 GPUs"
  CUDA_VISIBLE_DEVICES=0,1 python3 "$C/benchmarks/ddp_scaling.py" --loss "$CIFAR" \
    --out "$R/ddp-loss" "${LOSS[@]}"
  for w in 1 2; do cp "$R/ddp-loss/loss-${w}gpu/log.csv" "$R/res/ddp-loss-${w}gpu.csv"; done
}
# After the DDP timings each queue keeps to a quarter of the host's cores (a one-GPU machine
# has 16 of them): in the first round four queues compiling and taking matrix square roots on
# all 64 cores at once made one FID case take 35-175 s.
r0() { ddp_first 0; pin 0; cars_run tutorial --recipe tutorial; ddp_loss; }
r1() {
  ddp_first 1; pin 1
  cars_run ours --recipe cars64-fast --resize squash --max-minutes "$CARS_MINUTES"
  touch "$R/cars-ours.done"
}
r2() { ddp_first 2; pin 2; improved_arm fixed; }
r3() { ddp_first 3; pin 3; HYBRID_FID_VARIANCES="learned small" improved_arm hybrid; }

# PLAN=third
ablation() {  # ablation NAME FLAGS...: the cifar10-8min recipe with FLAGS, each EMA length scored
  local name=$1 last; shift
  stamp "issue 9: $name"
  recipe --ema-extra 0.05,0.2 --out "$R/$name" "$@" || return
  waitfor "$R/fid.ready"; last=$(last "$R/$name")
  sweep --json "$R/res/$name-sweep.json" --grid "0:$R/res/$name-samples.png" \
    --case "$last:ema:ddim:50" --case "$last:0.05:ddim:50" --case "$last:0.2:ddim:50" \
    --case "$last:ema:dpm-solver:50"
}
ours=(--recipe cars64-fast --resize squash --max-minutes "$CARS_MINUTES")
t0() { ddp_first 0; pin 0; cars_run tutorial --recipe tutorial; ablation lr8 --lr 8e-4; }
t1() {
  ddp_first 1; pin 1; cars_run ours "${ours[@]}"
  cars_run simpleunet-ours "${ours[@]}" --preset tutorial
  cars_run ours-default-compile "${ours[@]}" --compile-mode default
}
t2() { ddp_first 2; pin 2; ablation control; }
t3() { ddp_first 3; pin 3; ablation width96 --base-channels 96; }

# PLAN=fifth
recipe_samplers() {  # the recipe, then DDIM and DPM-Solver at several steps (#9)
  pin 1; stamp "issue 9: the recipe, then samplers and spacings"
  recipe --out "$R/control" || return
  waitfor "$R/fid.ready"; local a; a=$(last "$R/control")
  sweep --json "$R/res/control-sweep.json" --grid "0:$R/res/control-samples.png" \
    --case "$a:ema:ddim:50" --case "$a:ema:ddim:100" --case "$a:ema:ddim:200" \
    --case "$a:ema:ddim:50:trailing" --case "$a:ema:dpm-solver:10" \
    --case "$a:ema:dpm-solver:20" --case "$a:ema:dpm-solver:50" \
    --case "$a:ema:dpm-solver:20:leading"
}
# Issue 10's candidates: cars64-fast variants, each trained for the tutorial's measured minutes
# and scored three ways. Queues take them in this order as they come free (a claim is a
# directory, made atomically) and start none later than CAND_DEADLINE seconds after the launch.
cand_order=(nrb1 blocks nrb1-blocks b64 ours eager blocks-default nrb1-b64)
declare -A cand_flags=(
  [nrb1]="--num-res-blocks 1" [blocks]="--compile-scope blocks"
  [nrb1-blocks]="--num-res-blocks 1 --compile-scope blocks" [b64]="--batch-size 64"
  [ours]="--ema-extra 0.05,0.2" [eager]="--no-compile --no-channels-last"
  [blocks-default]="--compile-scope blocks --compile-mode default"
  [nrb1-b64]="--num-res-blocks 1 --batch-size 64"
)
declare -A cand_cases=([ours]="raw:ddim:50 0.05:ddim:50 0.2:ddim:50")  # scored besides the three
CAND_BASE=(--recipe cars64-fast --resize squash)
candidate() {  # candidate NAME: train it for the tutorial's minutes, then its FIDs and a grid
  local name=$1 m ck extra=(); waitfor "$R/cars/minutes.txt"; m=$(cat "$R/cars/minutes.txt")
  stamp "Stanford Cars candidate $name: ${cand_flags[$name]} for $m min"
  # shellcheck disable=SC2086  # the flags are words
  ddpm train --data "$CARS" "${CAND_BASE[@]}" --max-minutes "$m" --no-final-pictures \
    --out "$R/cars/$name" --quiet "${TUT[@]}" ${cand_flags[$name]} || return
  waitfor "$R/cars/cars64.npz"; ck=$(ls "$R/cars/$name"/ckpt-*.pt | tail -n 1)
  local c; for c in ${cand_cases[$name]:-}; do extra+=(--case "$ck:$c"); done
  local steps=(50 20 100); [[ -n ${SMOKE:-} ]] && steps=(3 3 3)
  python3 "$C/benchmarks/fid_sweep.py" --stats "$R/cars/cars64.npz" \
    --inception "$R/fid/fid-inception-fp16.pt" --n "$NC" "${DEV[@]}" \
    --json "$R/res/cars/$name-sweep.json" --grid "0:$R/res/cars/$name.png" \
    --case "$ck:ema:ddim:${steps[0]}" --case "$ck:ema:dpm-solver:${steps[1]}" \
    --case "$ck:ema:ddpm:${steps[2]}" "${extra[@]}"
}
candidates() {  # take the next unclaimed candidate until none is left or the deadline passed
  local name launched; launched=$(cat "$R/launched")
  mkdir -p "$R/claims" "$R/res/cars"
  for name in "${cand_order[@]}"; do
    (($(date +%s) - launched < ${CAND_DEADLINE:-1000})) || { stamp "deadline: no more"; return; }
    mkdir "$R/claims/$name" 2>/dev/null || continue
    candidate "$name" || stamp "candidate $name failed"
  done
}
p0() { pin 0; candidates; }
p1() { recipe_samplers; candidates; }
p2() { pin 2; cars_run tutorial --recipe tutorial; candidates; }
p3() {
  pin 3; stamp "issue 9: the recipe with --compile-scope blocks"
  if recipe --out "$R/blocks" --compile-scope blocks; then
    waitfor "$R/fid.ready"; local a; a=$(last "$R/blocks")
    sweep --json "$R/res/blocks-sweep.json" --case "$a:ema:ddim:50" --case "$a:ema:dpm-solver:20"
  fi
  candidates
}

# PLAN=sixth (rewritten 2026-11-27 in the seventh session before it ran: issue 10 was resolved,
# so all four GPUs go to issue 9). A chain of arms, each the recipe plus one change against
# the arm before it: s0 the recipe as it is (the decay after the warm-up), s3 batch 64, s1
# batch 64 and one residual block a level (issue 10's winner), s2 that and EDM's choices.
# Each is scored at every snapshot (the curve), with DPM-Solver-20, and by `ddpm eval`.
eval_fid() {  # eval_fid NAME CHECKPOINT: `ddpm eval` with DDIM-50, as the sweeps score it
  stamp "ddpm eval $1"
  local steps=50; [[ -n ${SMOKE:-} ]] && steps=3
  ddpm eval --checkpoint "$2" --fid-stats "${STATS[1]}" --inception "${STATS[3]}" --n "$N" \
    --sampler ddim --steps "$steps" --quiet "${DEV[@]}" --json "$R/res/$1-eval.json"
}
nfe_sweep() {  # nfe_sweep NAME: DDIM at 10 and 20, DPM-Solver at 10 and 50, on NAME's 8 minutes
  waitfor "$R/$1.trained"; local a; a=$(last "$R/$1")  # (DDIM-50, DPM-Solver-20: in its arm)
  stamp "$1's 8 minutes against network evaluations"
  local s=(10 20 50); [[ -n ${SMOKE:-} ]] && s=(2 3 4)
  sweep --json "$R/res/$1-nfe.json" --case "$a:ema:ddim:${s[0]}" \
    --case "$a:ema:ddim:${s[1]}" --case "$a:ema:dpm-solver:${s[0]}" \
    --case "$a:ema:dpm-solver:${s[2]}" --case "$a:ema:dpm-solver-3m:${s[0]}" \
    --case "$a:ema:dpm-solver-3m:${s[1]}" --case "$a:ema:dpm-solver-3m:${s[2]}"
}
arm() {  # arm NAME FLAGS...: the recipe with FLAGS, its curve, DPM-Solver-20 and `ddpm eval`
  local name=$1 a; shift  # (ARM_EVAL empty: no `ddpm eval`)
  stamp "issue 9: $name"
  recipe --out "$R/$name" "$@" || return
  touch "$R/$name.trained"
  waitfor "$R/fid.ready"; a=$(last "$R/$name")
  curve "$R/$name" "$name" --case "$a:ema:dpm-solver:20"
  [[ -n ${ARM_EVAL-1} ]] || return 0
  eval_fid "$name" "$a"
}
B64=(--batch-size 64) NRB1=(--num-res-blocks 1) EDM=(--prediction v --t-sampling lognormal
  --loss-weight edm)
s0() { pin 0; arm c10-control; }
s1() { pin 1; arm c10-nrb1-b64 "${NRB1[@]}" "${B64[@]}"; }
s2() { pin 2; arm c10-nrb1-b64-edm "${NRB1[@]}" "${B64[@]}" "${EDM[@]}"; }
s3() { pin 3; arm c10-b64 "${B64[@]}"; }

# PLAN=seventh (written 2026-11-27 after the step graph's runs, CPU smoke-tested, not yet run)
if [[ $PLAN == seventh ]]; then
  CAND_BASE=(--recipe cars64-2min) cand_order=(2min-graph 2min)
  cand_flags=([2min-graph]="--step-graph" [2min]="")
fi
v0() {  # the recipe as it is now (the step graph): the README's curve, and the solvers
  pin 0
  if [[ -z ${SMOKE:-} ]]; then  # the captured graph against eager steps, before it is trusted
    (cd "$C" && python3 -m pytest -q -m gpu tests/test_step_graph.py -p no:cacheprovider) || true
  fi
  arm c10-graph || return
  local a; a=$(last "$R/c10-graph")
  sweep --json "$R/res/c10-graph-solvers.json" --case "$a:ema:dpm-solver:10" \
    --case "$a:ema:dpm-solver:50" --case "$a:ema:ddim:20"
}
v1() { pin 1; arm c10-model-graphs --no-step-graph; }  # the same, the model's own graphs
v2() { pin 2; cars_run tutorial --recipe tutorial; candidates; }
v3() { pin 3; candidates; }

# PLAN=eighth (written 2026-11-27 in the eighth session)
gpu_tests() {  # the captured step against eager steps, on this GPU
  [[ -z ${SMOKE:-} ]] || return 0
  stamp "the step graph's CUDA tests"
  (cd "$C" && python3 -m pytest -q -m gpu tests/test_step_graph.py -p no:cacheprovider) || true
}
e0() { pin 0; arm c10-graph; }
e1() {
  pin 1; stamp "the peer, its whole step one CUDA graph"
  python3 "$C/benchmarks/peer_quality.py" --data "$CIFAR" --out "$R/peer" --step-graph \
    --cosine-steps "${PEER_STEPS:-13000}" "${PEER[@]}" || return
  cp "$R/peer/summary.json" "$R/res/peer-summary.json"
  waitfor "$R/fid.ready"; stamp "sweep the peer"; curve "$R/peer" peer
  nfe_sweep c10-graph
}
e2() { pin 2; ARM_EVAL='' arm c10-nrb1 --num-res-blocks 1; gpu_tests; }
e3() { pin 3; ARM_EVAL='' arm c10-scale-shift --scale-shift; }
# PLAN=ninth: one arm on a one-GPU machine (QUEUES=0), the recipe with ARM_FLAGS (named
# ARM_NAME), scored as the arms above with `ddpm eval`, on all the machine's cores.
# `ddpm eval` of 8 minutes first, the curve after it: the most needed number first, when
# device time is short.
n0() {
  local name=${ARM_NAME:-c10-next} a s cases=()
  stamp "issue 9: $name"
  # shellcheck disable=SC2086  # the flags are words
  recipe --out "$R/$name" ${ARM_FLAGS:-} || return
  waitfor "$R/fid.ready"; a=$(last "$R/$name")
  eval_fid "$name" "$a"
  stamp "sweep $name"
  while read -r s; do [[ $s == "$a" ]] || cases+=(--case "$s:ema:ddim:50"); done < <(snapshots "$R/$name" | tac)
  sweep --json "$R/res/$name-sweep.json" --grid "0:$R/res/$name-samples.png" \
    --case "$a:ema:ddim:50" "${cases[@]}" --case "$a:ema:dpm-solver:20"
}

IV=interval=0.28,5.42  # Kynkaanniemi et al.'s guidance interval, as a fid_sweep.py option

# PLAN=tenth (see the header)
LR6=(--lr 6e-4 --warmup 1000) B2=(--adam-beta2 0.99) NOATTN=(--attention-levels none)
lever() {  # lever NAME FLAGS...: the recipe with FLAGS, DDIM-50 at 4 and 8 minutes only
  lever_train "$@" && lever_score "$1"
}
lever_train() {  # lever_train NAME FLAGS...
  local name=$1; shift
  stamp "issue 9: $name"
  recipe --out "$R/$name" "$@" || return
  touch "$R/$name.trained"
}
lever_score() {  # lever_score NAME: DDIM-50 at its 4 and 8 minutes
  local name=$1; [[ -e $R/$name.trained ]] || return
  waitfor "$R/fid.ready"
  local s k=50 cases=(); [[ -n ${SMOKE:-} ]] && k=3
  while read -r s; do cases+=(--case "$s:ema:ddim:$k"); done < <(snapshots "$R/$name" | tail -2)
  sweep --json "$R/res/$name-sweep.json" "${cases[@]}"
}
k0() {
  pin 0; arm c10-recipe --ema-extra 0.05,0.2 || return
  local a; a=$(last "$R/c10-recipe"); local s=50; [[ -n ${SMOKE:-} ]] && s=3
  sweep --json "$R/res/c10-recipe-ema.json" --case "$a:0.05:ddim:$s" --case "$a:0.2:ddim:$s"
}
k1() { pin 1; lever c10-beta2 "${B2[@]}"; lever c10-all "${NOATTN[@]}" "${B2[@]}" "${LR6[@]}"; }
k2() { pin 2; lever c10-beta2-lr6 "${B2[@]}" "${LR6[@]}"; lever c10-beta2-lr8 "${B2[@]}" --lr 8e-4 --warmup 1000; }
k3() { pin 3; lever c10-noattn "${NOATTN[@]}"; nfe_sweep c10-recipe; }

# PLAN=eleventh (one GPU, QUEUES=0; the tenth round's last 530 s of device time): is 3M worth
# having? The recipe for 4 minutes (its cosine ends there), then DPM-Solver++ 2M against 3M at
# 10 and 20 evaluations, then DDIM at 10 and 20 if time is left. Seen (22:48-22:57 UTC): start
# 30 s, training 4.4 minutes, the six cases 2.8 minutes, three 50-step cases 1.6 minutes more.
l0() {
  recipe --out "$R/c10-4min" --max-minutes "${L_MIN:-4}" || return
  touch "$R/c10-4min.trained"; waitfor "$R/fid.ready"
  local a s=(10 20); a=$(last "$R/c10-4min"); [[ -n ${SMOKE:-} ]] && s=(2 3)
  sweep --json "$R/res/c10-4min-nfe.json" --case "$a:ema:dpm-solver:${s[0]}" \
    --case "$a:ema:dpm-solver-3m:${s[0]}" --case "$a:ema:dpm-solver:${s[1]}" \
    --case "$a:ema:dpm-solver-3m:${s[1]}" --case "$a:ema:ddim:${s[0]}" --case "$a:ema:ddim:${s[1]}"
}

# PLAN=twelfth (see the header): guidance at the target's 50 evaluations, a 16-minute point
eval_grid() {  # eval_grid NAME FLAGS: `ddpm eval` and a 100-image grid of those sampling flags
  echo "$2" >"$R/res/$1-flags.txt"
  # shellcheck disable=SC2086  # the flags are words
  ddpm eval $2 --fid-stats "${STATS[1]}" --inception "${STATS[3]}" --n "$N" --quiet \
    "${DEV[@]}" --json "$R/res/$1-eval.json"
  # shellcheck disable=SC2086
  ddpm sample $2 --n 100 --out "$R/res/$1.png" --quiet "${DEV[@]}"
}
best() {  # best NAME JSON...: `ddpm eval` and a grid of the lowest FID within 50 evaluations
  local name=$1 flags; shift
  flags=$(python3 "$C/benchmarks/best_case.py" --max-nfe 50 "$@") || return
  stamp "best of $name: $flags"
  eval_grid "$name-best" "$flags"
}
before_last() { snapshots "$1" | tail -n "$2" | head -n 1; }  # the snapshot $2 - 1 before the last
autoguide() {  # autoguide RUN PART: the run's 8 minutes guided by its own earlier snapshots
  waitfor "$R/$1.trained"; waitfor "$R/fid.ready"
  local a g4 g2 k=(25 30) c=(); a=$(last "$R/$1")
  g4=$(before_last "$R/$1" 2) g2=$(before_last "$R/$1" 3); [[ -n ${SMOKE:-} ]] && k=(3 4)
  if [[ $2 == 1 ]]; then
    c=("$a:ema:dpm-solver:${k[0]}" "$a:ema:dpm-solver:${k[0]}::guidance=1:guide=$g4"
      "$a:ema:dpm-solver:${k[0]}::guidance=1.5:guide=$g4" "$a:ema:dpm-solver:${k[0]}::guidance=2:guide=$g4")
  else
    c=("$a:ema:dpm-solver:${k[1]}::guidance=1.5:guide=$g4:$IV"
      "$a:ema:dpm-solver:${k[0]}::guidance=1:guide=$g2"
      "$a:ema:dpm-solver:${k[0]}::guidance=1:guide_ema=0.2")
  fi
  stamp "autoguidance of $1, part $2"
  sweep --json "$R/res/$1-ag$2-sweep.json" $(printf -- '--case %s ' "${c[@]}")
  touch "$R/$1.ag$2"
}
w0() {
  pin 0; arm c10-recipe || return
  waitfor "$R/c10-recipe.ag1"; waitfor "$R/c10-recipe.ag2"
  best c10-recipe "$R"/res/c10-recipe-ag1-sweep.json "$R"/res/c10-recipe-ag2-sweep.json \
    "$R/res/c10-recipe-sweep.json"
}
w1() {
  pin 1; stamp "issue 9: the recipe, class-conditional"
  recipe --out "$R/c10-cond" --class-cond --cond-drop 0.1 || return
  waitfor "$R/fid.ready"
  local a g4 k=(25 30 50); [[ -n ${SMOKE:-} ]] && k=(3 4 6)
  a=$(last "$R/c10-cond") g4=$(before_last "$R/c10-cond" 2)
  sweep --json "$R/res/c10-cond-sweep.json" --case "$a:ema:dpm-solver:${k[2]}" \
    --case "$a:ema:dpm-solver:${k[0]}::guidance=0.5" --case "$a:ema:dpm-solver:${k[0]}::guidance=1" \
    --case "$a:ema:dpm-solver:${k[1]}::guidance=1:$IV" --case "$a:ema:dpm-solver:${k[1]}::guidance=2:$IV" \
    --case "$a:ema:dpm-solver:${k[0]}::guidance=1:guide=$g4"
  best c10-cond "$R/res/c10-cond-sweep.json"
}
w2() {
  pin 2; local g=(--min-snr-gamma 2)
  lever_train c10-gamma2 "${g[@]}"; autoguide c10-recipe 1; lever_score c10-gamma2
}
w3() {
  pin 3; local b=(--batch-size 256 --lr 6e-4 --warmup 250)
  [[ -n ${SMOKE:-} ]] && b=(--batch-size 16 --lr 6e-4 --warmup 2)
  lever_train c10-b256 "${b[@]}"; autoguide c10-recipe 2; lever_score c10-b256
}

# PLAN=thirteenth (see the header): four seeds of the recipe, each guided by its own snapshots
frac() { python3 -c "print(f'{$MIN * $1:g}')"; }  # frac F: F of the run's minutes, as named
near() {  # near RUN M: the run's snapshot nearest M minutes (a slow step can pass a mark)
  timed_snapshots "$1" | awk -v m="$2" '{ d = ($1 - m) ^ 2
    if (NR == 1 || d < b) { b = d; f = substr($0, length($1) + 2) } } END { print f }'
}
G_LO=3/8 G_HI=2/3  # the guides beside the 4-minute one, as fractions of the run's minutes
[[ ${PLAN:-} == fourteenth ]] && G_LO=7/16 G_HI=9/16  # 3.5 and 4.5 minutes
seeded() {  # seeded K [FLAGS]: the recipe with seed K; its 8-minute model and guides at G_LO,
  local k=$1; shift  # 4 minutes and G_HI (3, 4 and 5.33: 28%, 42% and 62% of its steps)
  pin $((k % 4)); stamp "issue 9: the recipe, seed $k $*"
  recipe --out "$R/c10-seed$k" --seed "$k" --no-final-pictures \
    --snapshot-minutes "$SNAPS,$(frac $G_LO),$(frac $G_HI)" "$@" || return
  touch "$R/c10-seed$k.trained"; waitfor "$R/fid.ready"
  local run=$R/c10-seed$k
  a=$(last "$run") g3=$(near "$run" "$(frac $G_LO)") g4=$(near "$run" "$(frac 1/2)")
  g5=$(near "$run" "$(frac $G_HI)") k25=25 k30=30 k50=50
  [[ -n ${SMOKE:-} ]] && k25=3 k30=4 k50=6
  stamp "seed $k: $a guided by $g3, $g4, $g5"
}
ag() { echo "$a:ema:dpm-solver:$k25::guidance=$1:guide=$2"; }  # ag W GUIDE: 25 steps guided
seed_sweep() {  # seed_sweep K CASE...: the cases of seed K's model, then a done marker
  local k=$1; shift
  sweep --json "$R/res/c10-seed$k-sweep.json" $(printf -- '--case %s ' "$@")
  touch "$R/c10-seed$k.swept"
}
lead() {  # lead CASE...: GPU 0 after `seeded 0`: the predicted best as a user runs it (ddpm
  # eval, a grid), seed 0's CASEs, then `ddpm eval` and a grid of the best of all four seeds
  eval_grid c10-seed0-guided "--checkpoint $a --sampler dpm-solver --steps $k25 --guidance 1.5 --guide-model $g4"
  seed_sweep 0 "$@"
  local k; for k in 1 2 3; do waitfor "$R/c10-seed$k.swept"; done
  best c10-seeds "$R"/res/c10-seed?-sweep.json
}
y0() { local a g3 g4 g5 k25 k30 k50; seeded 0 || return
  lead "$a:ema:dpm-solver:$k50" "$a:ema:ddim:$k50" "$(ag 1 "$g4")"; }
y1() { local a g3 g4 g5 k25 k30 k50; seeded 1 || return
  seed_sweep 1 "$a:ema:dpm-solver:$k50" "$(ag 1 "$g4")" "$(ag 1.5 "$g4")" "$(ag 1.5 "$g5")"; }
y2() { local a g3 g4 g5 k25 k30 k50; seeded 2 || return
  seed_sweep 2 "$a:ema:dpm-solver:$k50" "$(ag 1.5 "$g4")" "$(ag 2 "$g4")" "$(ag 1 "$g5")"; }
y3() { local a g3 g4 g5 k25 k30 k50; seeded 3 || return
  seed_sweep 3 "$a:ema:dpm-solver:$k50" "$(ag 1.5 "$g4")" "$(ag 1.5 "$g3")" \
    "$a:ema:dpm-solver:$k30::guidance=1.5:guide=$g4:$IV"; }

# PLAN=fourteenth (see the header): the thirteenth's 10.12 on four seeds, and the knobs around it
z0() { local a g3 g4 g5 k25 k30 k50; seeded 0 || return  # the case again, w 1.25 and 1.75
  lead "$a:ema:dpm-solver:$k50" "$(ag 1.25 "$g4")" "$(ag 1.75 "$g4")"; }
z1() {  # the guide at 4.5 minutes, and the 4-minute guide's shorter EMA (0.05, kept for it)
  local a g3 g4 g5 k25 k30 k50; seeded 1 --ema-extra 0.05,0.2 || return
  seed_sweep 1 "$(ag 1.5 "$g4")" "$a:ema:dpm-solver:$k50" "$(ag 1.5 "$g5")" \
    "$(ag 1.5 "$g4"):guide_ema=0.05"; }
z2() { local a g3 g4 g5 k25 k30 k50; seeded 2 || return  # the guide at 3.5 minutes, and 3M
  seed_sweep 2 "$(ag 1.5 "$g4")" "$a:ema:dpm-solver:$k50" "$(ag 1.5 "$g3")" \
    "$a:ema:dpm-solver-3m:$k25::guidance=1.5:guide=$g4"; }
z3() { local a g3 g4 g5 k25 k30 k50; seeded 3 || return
  seed_sweep 3 "$(ag 1.5 "$g4")" "$a:ema:dpm-solver:$k50" \
    "$a:ema:dpm-solver:$k30::guidance=1.5:guide=$g4:$IV" "$a:ema:dpm-solver:$k30::guidance=2:guide=$g4:$IV"; }

# PLAN=fifteenth (see the header): seeds 4-7, DPM-Solver++(3M) against (2M) guided on each, then
# guided 3M at 10, 20 and 30 evaluations (5, 10, 15 steps) and at w 1.25
ag3() { echo "$a:ema:dpm-solver-3m:$1::guidance=${2:-1.5}:guide=$g4"; }  # ag3 STEPS [W]
f_seed() {  # f_seed K [STEPS [W]]: seed K's 3M and 2M guided at 25 steps, then 3M at STEPS, W
  local a g3 g4 g5 k25 k30 k50; seeded "$1" || return
  seed_sweep "$1" "$(ag3 "$k25")" "$(ag 1.5 "$g4")" "$(ag3 "${2:-$k25}" "${3:-1.5}")"; }
f0() { f_seed 4 10; }  # 20 evaluations
f1() { f_seed 5 5; }   # 10
f2() { f_seed 6 15; }  # 30
f3() { f_seed 7 "" 1.25; }

run_queue() {  # run_queue N: queue N on GPU N, logged, with a done marker
  export CUDA_VISIBLE_DEVICES=$1
  local t0=$SECONDS q=q$1
  [[ $PLAN == rest ]] && q=r$1
  [[ $PLAN == third ]] && q=t$1
  [[ $PLAN == fifth ]] && q=p$1
  [[ $PLAN == sixth ]] && q=s$1
  [[ $PLAN == seventh ]] && q=v$1
  [[ $PLAN == eighth ]] && q=e$1
  [[ $PLAN == ninth ]] && q=n$1
  [[ $PLAN == tenth ]] && q=k$1
  [[ $PLAN == eleventh ]] && q=l$1
  [[ $PLAN == twelfth ]] && q=w$1
  [[ $PLAN == thirteenth ]] && q=y$1
  [[ $PLAN == fourteenth ]] && q=z$1
  [[ $PLAN == fifteenth ]] && q=f$1
  "$q" >"$Q/q$1.log" 2>&1
  echo "exit $? after $((SECONDS - t0)) s" >>"$Q/q$1.log"
  touch "$Q/q$1.done"
}

pack() {  # the results so far (small files only), the queue logs and the training logs
  for run in A B C D cars/tutorial cars/ours cars-cond control width96 lr8 \
    cars/ours-default-compile cars/simpleunet-ours blocks c10-control c10-b64 c10-nrb1-b64 c10-nrb1-b64-edm \
    c10-graph c10-model-graphs c10-nrb1 c10-scale-shift "$(cat "$R/arm-name" 2>/dev/null)" \
    c10-recipe c10-beta2 c10-beta2-lr6 c10-lr6 c10-all c10-beta2-lr8 c10-noattn c10-4min \
    c10-cond c10-b256 c10-16min c10-gamma2 c10-seed0 c10-seed1 c10-seed2 c10-seed3 \
    c10-seed4 c10-seed5 c10-seed6 c10-seed7 \
    $(printf 'cars/%s ' "${cand_order[@]}"); do
    [[ -f $R/$run/log.csv ]] && cp "$R/$run/log.csv" "$R/res/$(echo "$run" | tr / -)-log.csv"
  done
  [[ -f $R/B/result.json ]] && cp "$R/B/result.json" "$R/res/B-result.json"
  cp "$Q"/*.log "$R/res/" 2>/dev/null
  tar -czf "$OUT/round.tgz" -C "$R" res
}

queues() { cat "$R/queue-list" 2>/dev/null || echo 0 1 2 3; }  # as launched (QUEUES)
status() {
  for k in $(queues); do
    local state=running; [[ -e $Q/q$k.done ]] && state=done
    echo "q$k $state: $(grep -E '^[0-9:]{8} |^exit|Error|error' "$Q/q$k.log" 2>/dev/null | tail -n 3 | tr '\n' '|')"
  done
  if [[ -d $R/claims ]]; then echo "claimed: $(ls "$R/claims" | tr '\n' ' ')"; fi
}

export PYTHONPATH=$C/src:$R/site PYTHONUNBUFFERED=1
case ${1:-} in
launch)  # call 1: the code, the CIFAR-10 train zip and diffusers, then the four queues
  rm -rf "$C" && mkdir -p "$C" "$R/stage" && cp -r src benchmarks tests pyproject.toml "$C/" && cp .stage/* "$R/stage/"
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$R/site" \
    "$R"/stage/diffusers-*.whl
  nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader 2>/dev/null
  python3 -c "import torch; print('torch', torch.__version__)"
  date +%s >"$R/launched"
  echo "${QUEUES:-0 1 2 3}" >"$R/queue-list"  # QUEUES=0: queue 0 alone, on a one-GPU machine
  echo "${ARM_NAME:-c10-next}" >"$R/arm-name"  # PLAN=ninth's run, for the wait calls' pack
  for k in $(queues); do
    setsid bash "$C/benchmarks/gpu/round.sh" queue "$k" </dev/null >/dev/null 2>&1 &
  done
  sleep 20; status
  ;;
queue) run_queue "$2" ;;
data)  # call 2: Stanford Cars (photos and devkit) and the CIFAR-10 test zip
  mkdir -p "$C/.cars" "$R/cars" && cp -r .cars/. "$C/.cars/" && cp -r .cars/. "$R/cars/"
  cp .test/test.zip "$R/test.zip" && touch "$R/cars.ready" && status
  ;;
fid)  # call 3: the Inception network and the CIFAR-10 train statistics
  mkdir -p "$R/fid" && cp .fid/* "$R/fid/" && touch "$R/fid.ready" && status
  ;;
wait)  # wait until every queue is done or $2 seconds have passed; bring the results
  end=$((SECONDS + ${2:-560}))
  n=$(queues | wc -w)
  while ((SECONDS < end)) && [[ $(ls "$Q"/*.done 2>/dev/null | wc -l) -lt $n ]]; do sleep 5; done
  status; pack; ls "$R/res"
  ;;
ddp)  # after the queues: DDP on 2 and 4 GPUs, appended to the 1-GPU timing of queue 3
  export CUDA_VISIBLE_DEVICES=0,1,2,3
  python3 "$C/benchmarks/ddp_scaling.py" --gpus "${GPUS:-2,4}" --keep --out "$R/res/ddp" \
    "${DDP[@]}" ${CASES:+--cases "$CASES"} 2>&1 | tee "$R/res/ddp.log"
  pack
  ;;
*)
  echo "usage: bash benchmarks/gpu/round.sh launch|data|fid|wait [SECONDS]|ddp" >&2
  exit 2
  ;;
esac
