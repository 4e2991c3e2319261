"""Training speed on the CPU against the number of torch threads, with and without competition.

Issue 16, item 9: the default run trained at 300-340 img/s on an idle 2-core machine and at
13-97 img/s while another process competed. This measures the default run's training step
(bundled digits, `small` preset, batch 64) at each thread count, first alone, then beside
`--busy` competitors: processes that each keep one core busy (a pure-Python loop), or, with
`--torch-busy`, torch processes running 2-thread matrix products (what a second training run
or a test suite looks like). Thread counts are measured in interleaved rounds so that a
change in the machine's other load hits every setting alike; img/s is the median of rounds.

    python benchmarks/cpu_threads.py                     # threads 1..cores, busy 0 and 1
    python benchmarks/cpu_threads.py --busy 0 1 2 --rounds 5

Prints a Markdown table (and the 1-minute load average before each block).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch


def spin_python(stop) -> None:
    while not stop.is_set():
        sum(range(1000))


def spin_torch(stop) -> None:
    torch.set_num_threads(2)
    a = torch.randn(256, 256)
    while not stop.is_set():
        a = (a @ a).tanh()


def step_rate(threads: int, state, schedule, cfg, stream, steps: int) -> float:
    from ddpm.train import train_step

    torch.set_num_threads(threads)
    x, y = next(stream)
    train_step(state, schedule, cfg, x, y, False)  # one step at the new thread count
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = next(stream)
        train_step(state, schedule, cfg, x, y, False)
    return steps * cfg.batch_size / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cores = len(os.sched_getaffinity(0))
    ap.add_argument("--threads", type=int, nargs="+", default=list(range(1, cores + 1)))
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1], help="competitor counts")
    ap.add_argument("--torch-busy", action="store_true", help="competitors run 2-thread torch")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from ddpm.data import batches
    from ddpm.train import TrainConfig, build_schedule, setup

    cfg = TrainConfig(out="/tmp/cpu-threads-unused")
    device, data, _, _, state = setup(cfg)
    schedule = build_schedule(cfg).to(device)
    stream = batches(data, cfg.batch_size, cfg.seed, 0, device, False)
    state.model.train()
    step_rate(cores, state, schedule, cfg, stream, 3)  # warm-up

    print(f"torch {torch.__version__}, {cores} cores, batch {cfg.batch_size}, preset {cfg.preset}")
    kind = "2-thread torch" if args.torch_busy else "1-core Python"
    print(
        f"\n| competitors ({kind}) | load avg before | "
        + " | ".join(f"{t} thread{'s' if t > 1 else ''} img/s" for t in args.threads)
        + " |"
    )
    print("|---|---:|" + "---:|" * len(args.threads))
    ctx = mp.get_context("spawn")
    for busy in args.busy:
        stop = ctx.Event()
        procs = [
            ctx.Process(target=spin_torch if args.torch_busy else spin_python, args=(stop,))
            for _ in range(busy)
        ]
        for p in procs:
            p.start()
        time.sleep(2 if busy else 0)
        load = os.getloadavg()[0]
        rates: dict[int, list[float]] = {t: [] for t in args.threads}
        for _ in range(args.rounds):
            for t in args.threads:
                rates[t].append(step_rate(t, state, schedule, cfg, stream, args.steps))
        stop.set()
        for p in procs:
            p.join()
        cells = " | ".join(
            f"{statistics.median(rates[t]):.0f} ({min(rates[t]):.0f}-{max(rates[t]):.0f})"
            for t in args.threads
        )
        print(f"| {busy} | {load:.1f} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
