"""Checks and times the fused GroupNorm + scale/shift + SiLU (`ddpm train --fused-norm`).

1. Each form the U-Nets use (GN+SiLU, GN(x + e)+SiLU, AdaGN scale/shift + SiLU, GN alone) at
   the shapes of the CIFAR-10 network at batch 128, bf16 and channels-last as training runs:
   outputs and every gradient against float32 plain modules, relative error of the fused path
   beside that of the plain modules under bf16 autocast. PASS where the fused one is within
   bf16 rounding (relative error under 1e-2).
2. Whole networks (each --preset): loss and gradients of one bf16 step with fused norms against
   a float32 step, beside the plain bf16 step's. PASS where the fused step is no further from
   float32 than twice the plain bf16 step (plus 1e-3).
3. Time of one forward + backward of each form: the fused kernels, the plain modules, and the
   plain modules under torch.compile (inductor's own fusion), median of timed windows.

The training speed-up itself is measured by train_throughput.py, ours and diffusers' network
each with and without the same kernels:

    python3 benchmarks/fused_norm_check.py                       # on a CUDA machine
    python3 benchmarks/train_throughput.py --cases cifar10 --sweep "" \\
        --variants bf16+CL+graphs,bf16+CL+graphs+fused \\
        --peer-variants bf16+CL+graphs,bf16+CL+graphs+fused
    TRITON_INTERPRET=1 python3 benchmarks/fused_norm_check.py --device cpu --small  # smoke

Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch
import torch.nn.functional as F
from common import environment, median, reset_compiler, run_script, sync, time_windows, write_json

from ddpm.models.layers import fuse_norms
from ddpm.models.presets import build_model, preset

FORMS = ("silu", "add", "scale-shift", "norm")
# (channels, side) of the GroupNorms of Ho et al.'s CIFAR-10 network (32 groups)
SHAPES = [(128, 32), (256, 16), (512, 16), (256, 8), (256, 4)]
SMALL_SHAPES = [(8, 4), (16, 3)]
TOLERANCE = 1e-2  # relative: a few bf16 roundings (2^-8 each)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def inputs(B: int, C: int, side: int, form: str, device, groups: int) -> dict[str, Any]:
    g = torch.Generator(device="cpu").manual_seed(C + side)

    def draw(*shape, scale=1.0, offset=0.0):
        return (torch.randn(*shape, generator=g) * scale + offset).to(device)

    x = draw(B, C, side, side, scale=1.5, offset=0.3).bfloat16()
    x = x.to(memory_format=torch.channels_last)
    d = dict(x=x, w=draw(C, scale=0.2, offset=1.0), b=draw(C, scale=0.1), groups=groups)
    if form == "add":
        d["add"] = draw(B, C, 1, 1).bfloat16()
    if form == "scale-shift":
        d["scale"], d["shift"] = draw(B, C, 1, 1, scale=0.2).bfloat16(), draw(B, C, 1, 1).bfloat16()
    return d


def plain(d: dict[str, Any], form: str, dtype=None) -> torch.Tensor:
    """The plain modules' computation; in float32 where `dtype` is given."""

    def cast(t):
        return t if dtype is None else t.to(dtype)

    x = cast(d["x"]) + (cast(d["add"]) if "add" in d else 0)
    h = F.group_norm(x, d["groups"], cast(d["w"]), cast(d["b"]), 1e-5)
    if "scale" in d:
        h = h * (1 + cast(d["scale"])) + cast(d["shift"])
    return h if form == "norm" else F.silu(h)


def fused(d: dict[str, Any], form: str) -> torch.Tensor:
    from ddpm.models.fused_norm import group_norm_act

    extra = {k: d[k] for k in ("add", "scale", "shift") if k in d}
    return group_norm_act(d["x"], d["groups"], d["w"], d["b"], 1e-5, act=form != "norm", **extra)


def grads(fn, d: dict[str, Any], dy: torch.Tensor) -> list[torch.Tensor]:
    leaves = {k: v.detach().clone().requires_grad_() for k, v in d.items() if k != "groups"}
    out = fn({**d, **leaves})
    return [out.detach(), *torch.autograd.grad(out, list(leaves.values()), dy.to(out.dtype))]


def check_forms(shapes, B: int, device, groups: int) -> list[dict[str, Any]]:
    print("\n| form | C x side | output: fused / plain bf16 | worst gradient: fused / plain | |")
    print("|---|---|---|---|---|")
    rows = []
    for C, side in shapes:
        for form in FORMS:
            d = inputs(B, C, side, form, device, groups)
            dy = torch.randn(B, C, side, side, device=device).to(memory_format=torch.channels_last)
            ref = grads(lambda v, f=form: plain(v, f, torch.float32), d, dy)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                ours = grads(lambda v, f=form: fused(v, f), d, dy)
                theirs = grads(lambda v, f=form: plain(v, f), d, dy)
            e_ours = [rel(a, r) for a, r in zip(ours, ref)]
            e_theirs = [rel(a, r) for a, r in zip(theirs, ref)]
            ok = max(e_ours) < TOLERANCE
            print(
                f"| {form} | {C} x {side} | {e_ours[0]:.1e} / {e_theirs[0]:.1e} | "
                f"{max(e_ours[1:]):.1e} / {max(e_theirs[1:]):.1e} | {'PASS' if ok else 'FAIL'} |"
            )
            rows.append(dict(form=form, C=C, side=side, fused=e_ours, plain=e_theirs, ok=ok))
    return rows


def model_grads(model, x, t, dy, bf16: bool) -> list[torch.Tensor]:
    """The network's output and the gradients of every parameter for the output gradient dy."""
    model.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(x, t).float()
    out.backward(dy)
    return [out.detach(), *(p.grad.detach().clone() for p in model.parameters())]


def check_models(names, B: int, device, side: int | None, compiled: bool) -> list[dict[str, Any]]:
    print("\n| preset | output: fused / plain bf16 | worst gradient: fused / plain | |")
    print("|---|---|---|---|")
    rows = []
    for name in names:
        spec = preset(name)
        torch.manual_seed(0)
        model = build_model(spec.arch, spec.config).to(device).to(memory_format=torch.channels_last)
        with torch.no_grad():  # trained networks have no zero layers
            for p in model.parameters():
                if not p.any():
                    p.normal_(0, 0.02)
        res = side or spec.image_size[0]
        g = torch.Generator(device="cpu").manual_seed(1)
        x = torch.randn(B, model.config.in_channels, res, res, generator=g).to(device)
        x = x.to(memory_format=torch.channels_last)
        t = torch.randint(0, 1000, (B,), generator=g).to(device)
        dy = torch.randn(x.shape, generator=g).to(device)
        ref = model_grads(model, x, t, dy, bf16=False)
        theirs = model_grads(model, x, t, dy, bf16=True)
        e_theirs = [rel(a, r) for a, r in zip(theirs, ref)]
        fuse_norms(model)
        ways = {"fused": model}
        if compiled:  # the kernels inside a torch.compile graph, as training runs them
            reset_compiler()
            ways["fused, compiled"] = torch.compile(model)
        for way, net in ways.items():
            e_ours = [rel(a, r) for a, r in zip(model_grads(net, x, t, dy, bf16=True), ref)]
            ok = max(a - 2 * b for a, b in zip(e_ours, e_theirs)) < 1e-3
            print(
                f"| {name}, {way} | {e_ours[0]:.1e} / {e_theirs[0]:.1e} | "
                f"{max(e_ours[1:]):.1e} / {max(e_theirs[1:]):.1e} | {'PASS' if ok else 'FAIL'} |"
            )
            rows.append(dict(preset=name, way=way, fused=e_ours, plain=e_theirs, ok=ok))
        fuse_norms(model, False)
    return rows


def step_of(fn, d: dict[str, Any], form: str, dy: torch.Tensor):
    """One forward and backward of `fn` (d, form), as the training step runs it."""
    leaves = [v for k, v in d.items() if k != "groups"]

    def step():
        with torch.autocast(dy.device.type, torch.bfloat16):
            out = fn(d, form)
        torch.autograd.grad(out, leaves, dy.to(out.dtype))

    return step


def time_forms(shapes, B: int, device, groups: int, args) -> list[dict[str, Any]]:
    print("\n| form | C x side | fused ms | plain ms | plain compiled ms | fused / compiled |")
    print("|---|---|---:|---:|---:|---:|")
    rows = []
    windows = (args.warmup, args.steps, args.windows)
    for C, side in shapes:
        for form in FORMS:
            d = inputs(B, C, side, form, device, groups)
            for k in ("x", "w", "b", "add", "scale", "shift"):
                if k in d:
                    d[k].requires_grad_()
            dy = torch.randn(B, C, side, side, device=device, dtype=torch.bfloat16)
            dy = dy.to(memory_format=torch.channels_last)
            reset_compiler()
            ways = dict(fused=fused, plain=plain, compiled=torch.compile(plain))
            ms = {
                who: 1e3 * median(time_windows(step_of(fn, d, form, dy), *windows))
                for who, fn in ways.items()
            }
            print(
                f"| {form} | {C} x {side} | {ms['fused']:.3f} | {ms['plain']:.3f} | "
                f"{ms['compiled']:.3f} | {ms['fused'] / ms['compiled']:.2f} |"
            )
            rows.append(dict(form=form, C=C, side=side, **ms))
    sync()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--presets", default="ddpm-cifar10,cifar10-8min")
    p.add_argument("--model-batch", type=int, default=16)
    p.add_argument("--small", action="store_true", help="tiny shapes, for a CPU smoke run")
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--windows", type=int, default=5)
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type != "cuda":
        from ddpm.models.layers import _interpreting

        if not _interpreting():
            sys.exit("fused_norm_check.py: the kernels run on CUDA, or on the CPU with "
                     "TRITON_INTERPRET=1 (set before Python starts)")  # fmt: skip
    shapes, groups = (SMALL_SHAPES, 4) if args.small else (SHAPES, 32)
    B = 2 if args.small else args.batch
    env = environment()
    print(env)
    forms = check_forms(shapes, B, device, groups)
    side = 8 if args.small else None
    names = [n for n in args.presets.split(",") if n]
    models = check_models(
        names, 2 if args.small else args.model_batch, device, side, device.type == "cuda"
    )
    timing = [] if args.no_timing else time_forms(shapes, B, device, groups, args)
    ok = all(r["ok"] for r in forms + models)
    print(f"\n{'PASS' if ok else 'FAIL'}: {sum(r['ok'] for r in forms + models)} of "
          f"{len(forms + models)} checks")  # fmt: skip
    write_json(args.json, [dict(forms=forms, models=models, timing=timing)], env)
    return 0 if ok else 1


if __name__ == "__main__":
    run_script(main)
