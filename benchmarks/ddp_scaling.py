"""Training on several GPUs of one node: img/s per GPU at 1, 2, 4 GPUs, and the loss of a
2-GPU run against a 1-GPU run at the same global batch.

Scaling. For each world size W the driver starts `torchrun --standalone --nproc-per-node W
ddp_scaling.py --worker ...`; every worker times our own `ddpm.train.train_step` (EMA,
gradient clipping, the non-finite guard, DistributedDataParallel as `ddpm train` builds it)
on random images at a fixed batch per GPU, with the fast path (bf16 autocast, channels-last,
torch.compile with CUDA graphs). A window ends with a CUDA synchronisation on every rank and
takes the slowest rank's time; img/s per GPU is the median window's. W = 1 is the plain
single-GPU step, without DDP. Efficiency = img/s per GPU at W / img/s at 1 GPU.

Loss. `ddpm train` on CIFAR-10 (`--data`), ddpm-cifar10, global batch 256, same seed, fast
path: once on 1 GPU, once with torchrun on 2 GPUs (128 each); mean loss per 100-step window
side by side. Batches, flips, t and eps are the same in both, and dropout is off, so the runs
differ by the order of their arithmetic alone (the all-reduce's sum, bf16 rounding).

    python3 benchmarks/ddp_scaling.py --gpus 1,2,4                      # scaling table
    python3 benchmarks/ddp_scaling.py --loss cifar10:cifar10/train.zip  # loss comparison
    python3 benchmarks/ddp_scaling.py --gpus 1,2 --device cpu --cases tiny --steps 3  # smoke

`--bucket-mb` is the DDP option of `ddpm train` (`--ddp-bucket-mb`).

Expected on four H100s of one host (torch 2.11, 2026-11-27): img/s per GPU 4,338 / 4,162 /
4,123 at 1 / 2 / 4 GPUs for ddpm-cifar10 (efficiency 96.0% and 95.0%), 1,622 / 1,581 / 1,571
for cars64 (97.5% and 97.2%); the 2-GPU loss within 0.3% of the 1-GPU loss in every window.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

# case -> (preset, image side, images per GPU)
CASES = {
    "cifar10": ("ddpm-cifar10", 32, 128),
    "cars64": ("cars64", 64, 128),
    "tiny": ("small", 16, 8),  # for a CPU smoke test of the script itself
}


def time_case(case: str, dist, args: argparse.Namespace) -> tuple[float, list[float], float]:
    """(img/s per GPU, window seconds, warm-up seconds) of the training step for one case."""
    import torch
    import torch.distributed as tdist

    from ddpm.diffusion.schedule import make_schedule
    from ddpm.models.presets import build_model, preset
    from ddpm.speed import compile_model, mark_step, use_channels_last
    from ddpm.train import EMA, TrainConfig, TrainState, distributed, make_optimizer, train_step

    name, side, per_gpu = CASES[case]
    cuda, W = dist.device.type == "cuda", dist.world_size
    cfg = TrainConfig(
        preset=name,
        batch_size=per_gpu * W,
        lr=1e-4,
        warmup=0,
        compile=cuda,
        compile_mode="reduce-overhead",
        channels_last=cuda,
        ddp_bucket_mb=args.bucket_mb,
    )
    torch.manual_seed(0)
    spec = preset(name)
    model = build_model(spec.arch, {**spec.config, "in_channels": 3}).to(dist.device)
    if cuda:
        use_channels_last(model)
    state = TrainState(
        model=model,
        ema=EMA(model),
        optimizer=make_optimizer(cfg, model, dist.device),
        noise_gen=torch.Generator(device=dist.device).manual_seed(0),
        shape=(3, side, side),
    )
    compiled = cfg.compile and compile_model(model, dist.device, cfg.compile_mode)
    mode = cfg.compile_mode if compiled else None
    ddp = None
    if W > 1:  # as ddpm.train.loop does it
        ddp = distributed.wrap(model, dist, cfg.ddp_bucket_mb)
    rows = dist.rows(cfg.batch_size)
    schedule = make_schedule("linear", 1000).to(dist.device)
    g = torch.Generator(device=dist.device).manual_seed(1 + dist.rank)
    data = [
        torch.rand(per_gpu, 3, side, side, device=dist.device, generator=g) * 2 - 1
        for _ in range(4)
    ]

    def step(i: int) -> None:
        mark_step(mode)
        train_step(state, schedule, cfg, data[i % 4], None, cuda, ddp, rows)

    def synced() -> None:
        if cuda:
            torch.cuda.synchronize()
        dist.barrier()

    t0 = time.perf_counter()
    for i in range(args.warmup):
        step(i)
    synced()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(args.windows):
        t0 = time.perf_counter()
        for i in range(args.steps):
            step(i)
        if cuda:
            torch.cuda.synchronize()
        dt = torch.tensor([time.perf_counter() - t0], device=dist.device)
        if W > 1:
            tdist.all_reduce(dt, op=tdist.ReduceOp.MAX)  # the slowest rank sets the pace
        times.append(float(dt))
        synced()
    return per_gpu * args.steps / statistics.median(times), times, warm


def worker(args: argparse.Namespace) -> None:
    """One process of the torchrun job: time the training step for each case."""
    import torch

    from ddpm.train import distributed

    dist = distributed.init(args.device)
    cuda = dist.device.type == "cuda"
    for case in args.cases.split(","):
        img_s, times, warm = time_case(case, dist, args)
        if dist.is_main:
            record = {
                "case": case,
                "world": dist.world_size,
                "per_gpu": CASES[case][2],
                "img_s_per_gpu": img_s,
                "window_s": times,
                "warmup_s": warm,
                "bucket_mb": args.bucket_mb,
                "card": torch.cuda.get_device_name() if cuda else "cpu",
                "torch": torch.__version__,
            }
            with open(args.record, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(
                f"{case}, {dist.world_size} GPU(s): {img_s:,.0f} img/s per GPU "
                f"(warm-up and compile {warm:.0f} s)",
                flush=True,
            )
        torch._dynamo.reset()  # forget the graphs (and CUDA graph pools) of this case
        if cuda:
            torch.cuda.empty_cache()
    distributed.shutdown()


def torchrun(nproc: int, argv: list[str]) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, "--nproc-per-node", str(nproc), *argv]


def env() -> dict[str, str]:
    path = os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def scaling(args: argparse.Namespace, ddp_flags: list[str]) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = out / "scaling.jsonl"
    if not args.keep:
        record.unlink(missing_ok=True)
    common = ["--cases", args.cases, "--device", args.device, "--record", str(record)]
    common += ["--warmup", str(args.warmup), "--steps", str(args.steps)]
    common += ["--windows", str(args.windows), *ddp_flags]
    for W in [int(w) for w in args.gpus.split(",")]:
        cmd = torchrun(W, [__file__, "--worker", *common])
        t0 = time.time()
        print(f"== {W} process(es)", flush=True)
        subprocess.run(cmd, env=env(), check=True)
        print(f"   ({time.time() - t0:.0f} s)", flush=True)
    rows = [json.loads(line) for line in record.read_text().splitlines()]
    path = "eager (CPU)" if rows[0]["card"] == "cpu" else "bf16 + CL + compile + CUDA graphs"
    print(f"\nDDP scaling, {path}, {rows[0]['card']}, torch {rows[0]['torch']}, DDP options:")
    print(f"bucket {args.bucket_mb} MiB\n")
    print("| case | GPUs | images per GPU | img/s per GPU | img/s total | efficiency |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        base = next((b for b in rows if b["case"] == r["case"] and b["world"] == 1), None)
        eff = f"{r['img_s_per_gpu'] / base['img_s_per_gpu']:.1%}" if base else "-"
        total = r["img_s_per_gpu"] * r["world"]
        print(
            f"| {r['case']} | {r['world']} | {r['per_gpu']} | {r['img_s_per_gpu']:,.0f} | "
            f"{total:,.0f} | {eff} |"
        )


def loss(args: argparse.Namespace, ddp_flags: list[str]) -> None:
    """1 GPU at the global batch against 2 GPUs at half of it each, same flags and seed."""
    out = Path(args.out)
    flags = ["train", "--data", args.loss, "--preset", args.loss_preset, "--device", args.device]
    flags += ["--batch-size", str(args.loss_batch), "--lr", "2e-4", "--warmup", "100"]
    flags += ["--dropout", "0"]  # so that the two runs differ by their arithmetic alone
    flags += ["--steps", str(args.loss_steps), "--log-every", str(max(args.loss_steps // 4, 1))]
    flags += ["--sample-every", "100000", "--checkpoint-every", "100000", "--num-samples", "16"]
    flags += ["--seed", "0", "--quiet", *(f"--ddp-{f[2:]}" for f in ddp_flags)]
    if args.device == "cuda":  # the fast path
        flags += ["--compile", "--compile-mode", "reduce-overhead", "--channels-last"]
    runs = {}
    for W in (1, 2):
        run = out / f"loss-{W}gpu"
        cmd = torchrun(W, ["-m", "ddpm", *flags, "--out", str(run)])
        if W == 1:  # the plain single-GPU command
            cmd = [sys.executable, "-m", "ddpm", *flags, "--out", str(run)]
        t0 = time.time()
        print(f"== ddpm train on {W} GPU(s)", flush=True)
        subprocess.run(cmd, env=env(), check=True)
        print(f"   ({time.time() - t0:.0f} s)", flush=True)
        with (run / "log.csv").open() as f:
            runs[W] = {int(r["step"]): r for r in csv.DictReader(f)}
    print("\n| step | loss, 1 GPU | loss, 2 GPUs | difference | img/s 1 GPU | img/s 2 GPUs |")
    print("|---:|---:|---:|---:|---:|---:|")
    for step, a in runs[1].items():
        b = runs[2].get(step)
        if b is None:
            continue
        la, lb = float(a["loss"]), float(b["loss"])
        print(
            f"| {step} | {la:.5f} | {lb:.5f} | {(lb - la) / la:+.2%} | "
            f"{float(a['img_per_s']):,.0f} | {float(b['img_per_s']):,.0f} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--record", help=argparse.SUPPRESS)
    p.add_argument("--gpus", default="1,2,4", help="world sizes to time")
    p.add_argument("--cases", default="cifar10,cars64", help=", ".join(CASES))
    p.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    p.add_argument("--warmup", type=int, default=30, help="steps before timing (compiles)")
    p.add_argument("--steps", type=int, default=25, help="steps per timed window")
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--loss", metavar="CIFAR10_ZIP", help="run the loss comparison instead")
    p.add_argument("--loss-steps", type=int, default=400, help="steps of each loss run")
    p.add_argument("--loss-batch", type=int, default=256, help="global batch of the loss runs")
    p.add_argument("--loss-preset", default="ddpm-cifar10")
    p.add_argument("--out", default="runs/ddp_scaling")
    p.add_argument("--keep", action="store_true", help="add to --out's earlier timings")
    p.add_argument("--bucket-mb", type=float, default=25.0, help="DDP bucket_cap_mb")
    args = p.parse_args()
    ddp_flags = [f"--bucket-mb={args.bucket_mb}"]
    if args.worker:
        worker(args)
    elif args.loss:
        loss(args, ddp_flags)
    else:
        scaling(args, ddp_flags)


if __name__ == "__main__":
    main()
