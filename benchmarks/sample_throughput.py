"""Sampling throughput on one GPU: our samplers against diffusers' scheduler loops, same network.

DDIM-50 (eta 0) and DDPM-1000 (the "small" posterior variance), x_0 clipped to [-1, 1] for
both libraries, with the DDPM CIFAR-10 network (35.7M parameters, random weights: speed does
not depend on training). Images/s is end to end: from drawing x_T to uint8 images in host
memory, after one warm-up run of the same batch size (which includes compilation).

Ours goes through the library's own path (`ddpm.sampling.generate.generate`: per-image seeds, the
schedule's coefficients read once on the host) with the speed features of
`ddpm.sampling.loaded.speed_up`. diffusers runs as its pipelines do: `UNet2DModel` +
`DDIMScheduler` / `DDPMScheduler` in a loop; "bf16" is its pipelines' `torch_dtype=torch.bfloat16`
(weights and latents in bf16), "bf16+CL+compile" adds channels-last and `torch.compile`.

    python3 benchmarks/sample_throughput.py --n 256 --ours bf16+CL+compile \
        --peer fp32,bf16+CL+compile

Expected on one H100 (torch 2.11, diffusers 0.42.1, 2026-11-26): DDIM-50 / DDPM-1000 img/s
ours 413.1 / 19.1, diffusers in fp32 110.7 / 5.5, diffusers with the same speed features
408.5 / 19.8.
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import torch
from common import (
    count_params,
    diffusers_or_none,
    environment,
    free_memory,
    peer_call,
    peer_unet,
    randomise_zero_weights,
    reset_compiler,
    run_script,
    sync,
    write_json,
)

from ddpm.data.images import to_uint8
from ddpm.diffusion.schedule import make_schedule
from ddpm.models.presets import build_model, preset
from ddpm.sampling.generate import generate
from ddpm.sampling.loaded import Loaded, speed_up
from ddpm.speed import compile_model, use_channels_last

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SAMPLERS = {"DDIM-50": ("ddim", 50), "DDPM-1000": ("ddpm", 1000)}
OURS = {
    "fp32": dict(bf16=False, channels_last=False, compile=False),
    "bf16+CL": dict(bf16=True, channels_last=True, compile=False),
    "bf16+CL+compile": dict(bf16=True, channels_last=True, compile=True),
}
PEER = {
    "fp32": dict(dtype=torch.float32, channels_last=False, compile=False),
    "bf16": dict(dtype=torch.bfloat16, channels_last=False, compile=False),
    "bf16+CL+compile": dict(dtype=torch.bfloat16, channels_last=True, compile=True),
}


def ours_runner(variant: str, n: int):
    spec = preset("ddpm-cifar10")
    model = randomise_zero_weights(build_model(spec.arch, spec.config)).to(DEVICE).eval()
    schedule = make_schedule("linear", 1000).to(DEVICE)
    loaded = speed_up(Loaded(model, schedule, "eps", (3, 32, 32), 0), **OURS[variant])

    def run(sampler: str, steps: int) -> torch.Tensor:
        x = generate(loaded, n, sampler=sampler, steps=steps, clip=True, batch_size=n)
        return to_uint8(x)

    return model, run


def peer_runner(variant: str, n: int):
    import diffusers

    cfg = PEER[variant]
    model = randomise_zero_weights(peer_unet("ddpm-cifar10"))  # type: ignore[arg-type]
    model = model.to(DEVICE, cfg["dtype"]).eval()
    if cfg["channels_last"]:
        use_channels_last(model)
    if cfg["compile"]:
        compile_model(model, DEVICE)
    call = peer_call(model)
    common = dict(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True)
    schedulers = {
        "ddim": diffusers.DDIMScheduler(**common, set_alpha_to_one=True),
        "ddpm": diffusers.DDPMScheduler(**common, variance_type="fixed_small"),
    }

    @torch.no_grad()
    def run(sampler: str, steps: int) -> torch.Tensor:
        sched = schedulers[sampler]
        sched.set_timesteps(steps)
        g = torch.Generator(device=DEVICE).manual_seed(0)
        x = torch.randn((n, 3, 32, 32), generator=g, device=DEVICE, dtype=cfg["dtype"])
        for t in sched.timesteps:
            eps = call(x, t)
            x = sched.step(eps, t, x, generator=g).prev_sample
        return ((x.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).cpu()

    return model, run


def measure(who: str, variant: str, n: int, samplers: list[str]) -> list[dict[str, Any]]:
    free_memory()
    reset_compiler()
    model, run = (ours_runner if who == "ours" else peer_runner)(variant, n)
    rows = []
    t0 = time.perf_counter()
    run("ddim", 2)  # warm-up at this batch size: compilation, cuDNN plans, allocator
    sync()
    warm = time.perf_counter() - t0
    for name in samplers:
        sampler, steps = SAMPLERS[name]
        t0 = time.perf_counter()
        images = run(sampler, steps)
        sync()
        secs = time.perf_counter() - t0
        assert images.dtype == torch.uint8 and images.shape == (n, 3, 32, 32)
        row = dict(
            who=who,
            variant=variant,
            sampler=name,
            n=n,
            params=count_params(model),
            seconds=secs,
            img_s=n / secs,
            steps_s=steps / secs,
            warmup_s=warm,
            mem_gib=torch.cuda.max_memory_allocated() / 2**30 if DEVICE.type == "cuda" else 0,
        )
        rows.append(row)
        print(
            f"| {who} | {variant} | {name} | {n} | {row['img_s']:,.1f} | {secs:.2f} s | "
            f"{row['steps_s']:.1f} | {row['mem_gib']:.1f} | {warm:.0f} s |",
            flush=True,
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=256, help="images (one batch, at most 1000)")
    p.add_argument("--samplers", default="DDIM-50,DDPM-1000")
    p.add_argument("--ours", default=",".join(OURS))
    p.add_argument("--peer", default=",".join(PEER))
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args()
    warnings.filterwarnings("ignore", message=".*(lru_cache|Profiler clears events).*")
    env = environment()
    print(env)
    samplers = args.samplers.split(",")
    print(
        "| library | variant | sampler | images | img/s | time | steps/s | peak mem GiB | warm-up |"
        "\n|---|---|---|---|---|---|---|---|---|",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    for who, variants in (("ours", args.ours), ("diffusers", args.peer)):
        if who == "diffusers" and diffusers_or_none() is None:
            print("diffusers is not installed: only ours")
            continue
        for v in filter(None, variants.split(",")):
            try:
                rows += measure(who, v, args.n, samplers)
            except Exception as e:
                print(f"| {who} | {v} | error: {type(e).__name__}: {str(e)[:150]} |", flush=True)
            write_json(args.json, rows, env)

    print("\n## Summary: ours / diffusers (img/s)")
    for s in samplers:
        mine = [r for r in rows if r["sampler"] == s and r["who"] == "ours"]
        peer = [r for r in rows if r["sampler"] == s and r["who"] == "diffusers"]
        if not mine or not peer:
            continue
        best = max(mine, key=lambda r: r["img_s"])
        for q in peer:
            print(
                f"{s}: ours {best['variant']} {best['img_s']:,.1f} vs diffusers {q['variant']} "
                f"{q['img_s']:,.1f} img/s = {best['img_s'] / q['img_s']:.2f}x"
            )
    write_json(args.json, rows, env)


if __name__ == "__main__":
    run_script(main)
