"""Training throughput on one GPU: our presets against diffusers' UNet2DModel, one run, one table.

A step is forward + backward + fused AdamW on random images, with the DDPM loss (random t,
random eps, x_t = √ᾱ x_0 + √(1-ᾱ) eps, MSE on eps) for every model alike. img/s is the median
over several timed windows after a warm-up (which includes compilation), each window ended by
a CUDA synchronisation. TFLOP/s is FlopCounterMode's count of one step times steps per second;
"peak" is a bf16 8192^3 matmul measured in the same run. The row "full train_step" is our
library's own step (ddpm.train.train_step: EMA, gradient clipping, the on-device skip of
non-finite steps) with the best variant.

    python3 benchmarks/train_throughput.py                 # everything
    python3 benchmarks/train_throughput.py --cases cifar10 --sweep 256,512
    python3 benchmarks/train_throughput.py --cases cifar10 --variants bf16+CL+graphs \
        --peer-variants bf16+CL+graphs --sweep ""            # both with CUDA graphs
    python3 benchmarks/train_throughput.py --cases cifar10 --sweep "" \
        --variants bf16+CL+graphs,bf16+CL+graphs+fused \
        --peer-variants bf16+CL+graphs,bf16+CL+graphs+fused  # the fused GroupNorm, both sides

diffusers is optional: without it only our models run.

Expected on one H100 (torch 2.11, diffusers 0.42.1, 2026-11-26/27), CIFAR-10 network at batch
128: ours 1,898 img/s in fp32, 2,316 in bf16, 4,430 with bf16 + channels-last + compile + CUDA
graphs; diffusers 2,406 with bf16 + channels-last + compile and 4,122 with CUDA graphs too
(ours 4,438 in that run: 1.08x). With the fused GroupNorm kernels (`+fused`, 2026-12-07): ours
4,467 -> 6,135, diffusers 4,137 -> 5,677. 64x64: cars64 1,649, diffusers' train_unconditional
model 1,641, the tutorial's SimpleUnet 10,366. `--cases cifar10-8min` times the recipe's
network (ours only).
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from common import (
    count_flops,
    count_params,
    diffusers_or_none,
    environment,
    free_memory,
    fuse_peer_norms,
    kernel_profile,
    matmul_peak_tflops,
    median,
    peer_call,
    peer_unet,
    print_profile,
    randomise_zero_weights,
    reset_compiler,
    run_script,
    sync,
    time_windows,
    write_json,
)

from ddpm.diffusion.schedule import make_schedule
from ddpm.models.layers import fuse_norms
from ddpm.models.presets import build_model, preset
from ddpm.speed import compile_model, mark_step, use_channels_last

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# case -> (our preset, resolution, the peer's config or None, the peer's label)
CASES: dict[str, tuple[str, int, str | None]] = {
    "cifar10": ("ddpm-cifar10", 32, "ddpm-cifar10"),
    "cifar10-8min": ("cifar10-8min", 32, None),  # the recipe's network
    "cars64": ("cars64", 64, "train_unconditional"),
    "tutorial": ("tutorial", 64, None),
}


@dataclass(frozen=True)
class Variant:
    bf16: bool
    channels_last: bool
    compile_mode: str | None  # None: eager
    cudnn_benchmark: bool = False  # let cuDNN time its convolution algorithms
    fused: bool = False  # GroupNorm + scale/shift + SiLU as Triton kernels (--fused-norm)


VARIANTS: dict[str, Variant] = {
    "fp32": Variant(False, False, None),
    "bf16": Variant(True, False, None),
    "bf16+CL": Variant(True, True, None),
    "bf16+compile": Variant(True, False, "default"),
    "bf16+CL+compile": Variant(True, True, "default"),
    "bf16+CL+graphs": Variant(True, True, "reduce-overhead"),
    "bf16+CL+graphs+bench": Variant(True, True, "reduce-overhead", True),
    "bf16+CL+compile+bench": Variant(True, True, "default", True),
    "bf16+CL+autotune+bench": Variant(True, True, "max-autotune", True),
    "bf16+CL+fused": Variant(True, True, None, fused=True),
    "bf16+CL+compile+fused": Variant(True, True, "default", fused=True),
    "bf16+CL+graphs+fused": Variant(True, True, "reduce-overhead", fused=True),
}


def build(who: str, case: str) -> tuple[torch.nn.Module, Any]:
    """(module, callable (x_t, t) -> eps) for `who` in ("ours", "diffusers")."""
    ours, _, peer = CASES[case]
    if who == "ours":
        spec = preset(ours)
        model = build_model(spec.arch, spec.config)
        return model, model
    model = peer_unet(peer)  # type: ignore[arg-type]
    return model, peer_call(model)  # type: ignore[arg-type]


class Step:
    """One DDPM training step of a model on rotating random batches (no host sync)."""

    def __init__(self, model, call, B: int, res: int, variant: Variant, device: torch.device):
        self.model, self.call, self.variant = model, call, variant
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        self.abar = make_schedule("linear", 1000).alphas_cumprod.float().to(device)
        g = torch.Generator(device=device).manual_seed(0)
        self.data = [torch.rand(B, 3, res, res, device=device, generator=g) * 2 - 1 for _ in "abcd"]
        self.i = 0

    def __call__(self) -> torch.Tensor:
        x_0 = self.data[self.i % len(self.data)]
        self.i += 1
        t = torch.randint(0, 1000, (x_0.shape[0],), device=x_0.device)
        eps = torch.randn_like(x_0)
        a = self.abar[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x_0 + (1 - a).sqrt() * eps
        mark_step(self.variant.compile_mode)
        with torch.autocast(x_0.device.type, dtype=torch.bfloat16, enabled=self.variant.bf16):
            out = self.call(x_t, t)
        loss = F.mse_loss(out.float(), eps)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss


def library_step(model, case: str, B: int, res: int, variant: Variant, device: torch.device):
    """Our own ddpm.train.train_step (EMA, clipping, non-finite guard) as a benchmark step."""
    from ddpm.train import EMA, TrainConfig, TrainState, make_optimizer, train_step

    cfg = TrainConfig(preset=CASES[case][0], batch_size=B, lr=1e-4, warmup=0)
    state = TrainState(
        model=model,
        ema=EMA(model),
        optimizer=make_optimizer(cfg, model, device),
        noise_gen=torch.Generator(device=device).manual_seed(0),
        shape=(3, res, res),
    )
    schedule = make_schedule("linear", 1000).to(device)
    g = torch.Generator(device=device).manual_seed(1)
    data = [torch.rand(B, 3, res, res, device=device, generator=g) * 2 - 1 for _ in "abcd"]
    counter = [0]

    def step():
        counter[0] += 1
        mark_step(variant.compile_mode)
        return train_step(state, schedule, cfg, data[counter[0] % 4], None, variant.bf16)

    return step


def measure(
    who: str,
    case: str,
    vname: str,
    B: int,
    args: argparse.Namespace,
    flops_cache: dict,
    peak: float,
    full_step: bool = False,
) -> dict[str, Any]:
    variant = VARIANTS[vname]
    device = DEVICE
    res = CASES[case][1]
    free_memory()
    reset_compiler()
    torch.backends.cudnn.benchmark = variant.cudnn_benchmark
    model, call = build(who, case)
    randomise_zero_weights(model).to(device).train()
    row: dict[str, Any] = dict(
        case=case, who=who, variant=vname + (" full train_step" if full_step else ""), batch=B
    )
    row["params"] = count_params(model)
    key = (who, case)
    if key not in flops_cache:  # one eager fp32 step of 4 images, before any compilation
        flops_cache[key] = count_flops(Step(model, call, 4, res, VARIANTS["fp32"], device)) / 4
    flops = flops_cache[key] * B  # FLOPs are linear in the batch
    if variant.channels_last:
        use_channels_last(model)
    if variant.fused:  # the peer gets the same kernels where they are a drop-in
        fuse_norms(model) if who == "ours" else fuse_peer_norms(model)
    if variant.compile_mode is not None:
        compile_model(model, device, variant.compile_mode)
    step = (
        library_step(model, case, B, res, variant, device)
        if full_step
        else Step(model, call, B, res, variant, device)
    )
    t0 = time.perf_counter()
    step()
    sync()
    row["first_step_s"] = time.perf_counter() - t0  # compilation, when compiled
    secs = time_windows(step, args.warmup, args.steps, args.windows)
    s = median(secs)
    row.update(
        img_s=B / s,
        spread=(max(secs) - min(secs)) / s,
        gflop_per_img=flops / B / 1e9,
        tflops=flops / s / 1e12,
        peak_frac=flops / s / 1e12 / peak,
        mem_gib=torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0,
    )
    if args.profile and who == "ours" and vname == args.profile_variant and not full_step:
        row["profile"] = kernel_profile(step)
    del step, model, call
    return row


def fmt(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"| {row['who']} | {row['variant']} | {row['batch']} | {row['error']} |||||"
    return (
        f"| {row['who']} | {row['variant']} | {row['batch']} | {row['img_s']:,.0f} | "
        f"{row['tflops']:.0f} | {row['peak_frac']:.1%} | {row['mem_gib']:.1f} | "
        f"{row['first_step_s']:.0f} s |"
    )


HEADER = (
    "| model | variant | batch | img/s | TFLOP/s | of peak | peak mem GiB | first step |\n"
    "|---|---|---|---|---|---|---|---|"
)


def run_one(who, case, vname, B, args, flops, peak, rows, full_step=False) -> dict[str, Any]:
    try:
        row = measure(who, case, vname, B, args, flops, peak, full_step)
    except Exception as e:  # OOM or a compile failure: record it and go on
        msg = f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        row = dict(case=case, who=who, variant=vname, batch=B, error=msg)
    rows.append(row)
    print(fmt(row), flush=True)
    if "profile" in row:
        print_profile(f"{who} {case} {vname} batch {B}", row["profile"])
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="cifar10,cars64,tutorial")
    p.add_argument("--models", default="ours,diffusers")
    p.add_argument("--variants", default=",".join(VARIANTS), help="ours")
    p.add_argument(
        "--peer-variants",
        default="fp32,bf16,bf16+CL,bf16+compile,bf16+CL+compile,bf16+CL+compile+fused",
    )
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--sweep", default="256", help="more batch sizes for each best variant")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="kernel profile of one variant (ours)")
    p.add_argument("--profile-variant", default="bf16+CL+compile")
    p.add_argument("--full-step", action="store_true", help="also time ddpm.train.train_step")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args()
    warnings.filterwarnings("ignore", message=".*(lru_cache|Profiler clears events).*")

    env = environment()
    peak = matmul_peak_tflops() if DEVICE.type == "cuda" else float("nan")
    env["matmul_peak_tflops"] = peak
    print(f"{env}\nbf16 matmul peak measured: {peak:.0f} TFLOP/s", flush=True)
    rows: list[dict[str, Any]] = []
    flops: dict = {}
    sweep = [int(b) for b in args.sweep.split(",") if b]
    for case in args.cases.split(","):
        ours, res, peer = CASES[case]
        print(f"\n### {case}: ours={ours} vs diffusers={peer} at {res}x{res}\n{HEADER}", flush=True)
        for who in args.models.split(","):
            if who == "diffusers" and (peer is None or diffusers_or_none() is None):
                continue
            names = args.variants if who == "ours" else args.peer_variants
            mine = [
                run_one(who, case, v, args.batch, args, flops, peak, rows) for v in names.split(",")
            ]
            ok = [r for r in mine if "error" not in r]
            if not ok:
                continue
            best = max(ok, key=lambda r: r["img_s"])["variant"]
            if args.full_step and who == "ours":
                run_one(who, case, best, args.batch, args, flops, peak, rows, full_step=True)
            for B in sweep:
                run_one(who, case, best, B, args, flops, peak, rows)
            write_json(args.json, rows, env)

    print("\n## Summary (img/s; best over variants and batch sizes)")
    for case in args.cases.split(","):
        good = [r for r in rows if r["case"] == case and "error" not in r]
        best: dict[str, dict] = {}
        at_b: dict[str, dict] = {}  # best variant at the headline batch size (model-only step)
        for r in good:
            if r["img_s"] > best.get(r["who"], {}).get("img_s", 0):
                best[r["who"]] = r
            plain = r["batch"] == args.batch and "full" not in r["variant"]
            if plain and r["img_s"] > at_b.get(r["who"], {}).get("img_s", 0):
                at_b[r["who"]] = r
        for who, r in best.items():
            b = at_b.get(who)
            print(
                f"{case} {who}: params {r['params']:,}; at batch {args.batch}: "
                + (f"{b['img_s']:,.0f} img/s ({b['variant']})" if b else "-")
                + f"; best {r['img_s']:,.0f} img/s ({r['variant']}, batch {r['batch']})"
            )
        if "ours" in at_b and "diffusers" in at_b:
            print(
                f"{case}: ours / diffusers at batch {args.batch} = "
                f"{at_b['ours']['img_s'] / at_b['diffusers']['img_s']:.2f}x; best vs best = "
                f"{best['ours']['img_s'] / best['diffusers']['img_s']:.2f}x"
            )
    write_json(args.json, rows, env)


if __name__ == "__main__":
    run_script(main)
