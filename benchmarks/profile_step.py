"""Where a training step's time goes: one step of a preset under torch.profiler, by category.

Each GPU kernel (each op's own CPU time on the CPU) goes to one category: convolution forward,
input-grad and weight-grad (cuDNN's fprop / dgrad / wgrad kernels), matmuls (linear layers),
attention, normalisation, activations, elementwise work with casts and copies (layout
transposes included), optimizer + EMA + gradient clipping, other. A kernel is placed by its
name where that says enough (fprop, flash, multi_tensor_apply; Triton kernels by the ops they
fuse: group_norm -> normalisation, silu -> activation, else elementwise), otherwise by the
nearest enclosing ATen op that launched it. The category times add up to the kernel time.
FLOPs are counted with FlopCounterMode on one eager step (convolution forward, the two halves
of convolution_backward, mm/addmm/bmm, scaled-dot-product attention) and set against the
card's bf16 matmul rate measured in the same run; the other categories are memory-bound.
wall is the median over timed windows without the profiler; GPU busy = kernel / wall.

    cd benchmarks && python3 profile_step.py --batch 128 --json profile.json
    python3 benchmarks/profile_step.py --preset cifar10-8min --variant bf16 --no-full-step
    python3 benchmarks/profile_step.py --device cpu --preset small --batch 4 --variant fp32

By default the step is the library's own ddpm.train.train_step (EMA, gradient clipping, the
non-finite guard) via train_throughput.library_step; --no-full-step times the bare
forward + backward + fused AdamW of train_throughput.Step.

The output, one table a preset (here the CPU smoke setting above: 2-core CPU, torch 2.14.1,
2026-12-07; on a GPU the rows are kernel times and "of peak" is filled in: the H100 tables for
ddpm-cifar10 and cifar10-8min at batch 128 are in docs/speed.md, "Where a training step's
time goes"; there, for cifar10-8min: conv forward 1.96 ms at 64% of peak, normalisation 4.78
ms, elementwise/casts/copies 4.90 ms of 18.20 ms of kernels):

    small, ddpm.train.train_step, fp32, batch 4 (1,113,955 parameters): wall 895.03 ms/step ...

    | category | ms/step | share | GFLOP/step | TFLOP/s | of peak |
    |---|---:|---:|---:|---:|---:|
    | conv forward | 161.84 | 9.8% | 0.487 | 0.00301 | - |
    | conv input-grad | 0.00 | 0.0% | - | |  |
    | conv weight-grad | 0.00 | 0.0% | - | |  |
    | conv backward, unsplit | 267.80 | 16.2% | 0.972 | 0.00363 | - |
    | matmuls (linear) | 115.81 | 7.0% | 0.0275 | 0.000237 | - |
    | attention | 7.63 | 0.5% | 0 | 0 | - |
    | normalisation | 49.18 | 3.0% | - | memory-bound |  |
    | activations | 11.92 | 0.7% | - | memory-bound |  |
    | elementwise, casts, copies | 314.48 | 19.0% | - | memory-bound |  |
    | optimizer, EMA, clipping | 716.78 | 43.4% | - | memory-bound |  |
    | other | 5.66 | 0.3% | - | |  |
    | all ops (CPU self time) | 1651.11 | 100.0% | 1.49 | 0.0009 | - |

On the CPU, oneDNN computes both halves of a convolution's backward in one op ("unsplit"), the
self times of ops on several threads can add up to more than the wall time, and the CPU's
SDPA kernel has no FLOP formula (attention 0).
"""

from __future__ import annotations

import argparse
import re
import time
import warnings
from collections import defaultdict
from typing import Any

import torch
from common import (
    count_params,
    environment,
    flops_by_kind,
    free_memory,
    matmul_peak_tflops,
    median,
    randomise_zero_weights,
    reset_compiler,
    run_script,
    sync,
    time_windows,
    write_json,
)
from train_throughput import CASES, VARIANTS, Step, library_step

from ddpm.models.presets import build_model, preset
from ddpm.speed import compile_model, use_channels_last

CONV_FWD, CONV_IN, CONV_W = "conv forward", "conv input-grad", "conv weight-grad"
CONV_BWD = "conv backward, unsplit"  # both halves in one kernel or op (the CPU's oneDNN)
MATMUL, ATTN = "matmuls (linear)", "attention"
NORM, ACT = "normalisation", "activations"
ELEM, OPT, OTHER = "elementwise, casts, copies", "optimizer, EMA, clipping", "other"
CATEGORIES = (CONV_FWD, CONV_IN, CONV_W, CONV_BWD, MATMUL, ATTN, NORM, ACT, ELEM, OPT, OTHER)
COMPUTE = {CONV_FWD, CONV_IN, CONV_W, CONV_BWD, MATMUL, ATTN}  # FLOPs counted
ALWAYS = tuple(c for c in CATEGORIES if c != CONV_BWD)  # rows shown even at zero

_NORMS = ("group_norm", "groupnorm", "layer_norm", "layernorm", "batch_norm", "batchnorm")
_ACTS = ("silu", "gelu", "sigmoid", "relu", "mish", "softplus", "tanh")
_LAYOUT = ("nchwtonhwc", "nhwctonchw", "transpose", "permute")
_MATMUL_OPS = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "_addmm_activation"}
_MATMUL_GRADS = ("mmbackward", "addmmbackward", "bmmbackward", "linearbackward")
# ops that launch nothing of their own: their CPU time belongs to whoever called them
_STRUCTURAL = {
    "empty", "empty_like", "empty_strided", "view", "reshape", "_reshape_alias", "as_strided",
    "t", "transpose", "permute", "expand", "unsqueeze", "squeeze", "select", "slice", "detach",
    "alias", "resolve_conj", "resolve_neg", "_unsafe_view", "contiguous", "unbind", "split",
    "chunk", "narrow", "flatten", "lift_fresh", "set_", "result_type",
}  # fmt: skip


def kernel_category(name: str) -> str | None:
    """A GPU kernel's category from its name alone, where the name says it (else None)."""
    n = name.lower()
    if n.startswith("triton_"):  # inductor: triton_{poi,red,per,tem}_fused_<ops>_<n>
        if "foreach" in n or "adam" in n or "lerp" in n:
            return OPT
        if n.startswith("triton_tem"):
            return CONV_FWD if "convolution" in n else MATMUL
        if any(k in n for k in _NORMS):
            return NORM
        if any(k in n for k in _ACTS):
            return ACT
        return ELEM
    if any(k in n for k in _LAYOUT):
        return ELEM
    if "fprop" in n:
        return CONV_FWD
    if "dgrad" in n:
        return CONV_IN
    if "wgrad" in n:
        return CONV_W
    if any(k in n for k in ("flash", "fmha", "attention", "attn", "sdpa", "softmax")):
        return ATTN
    if any(k in n for k in ("multi_tensor", "foreach", "adam", "lerp", "lpnorm")):
        return OPT
    return None


def kernel_fallback(name: str) -> str:
    """A kernel's category by its name when no enclosing op told (weaker hints)."""
    n = name.lower()
    if any(k in n for k in ("gemm", "nvjet", "cutlass", "xmma", "cublas", "sm90_", "sm80_")):
        return MATMUL
    if any(k in n for k in _NORMS) or "rowwisemoments" in n:
        return NORM
    keys = ("elementwise", "vectorized", "unrolled", "reduce", "memcpy", "memset", "copy", "fill")
    if any(k in n for k in keys):
        return ELEM
    return OTHER


def op_category(op: str) -> str | None:
    """The category of an op or annotation (ATen op, autograd node, record_function), None
    when it says nothing (structural ops, compiled-region wrappers)."""
    name = op.split("evaluate_function:")[-1].strip()
    short = name.split("::")[-1]
    n = short.lower().replace("_", "")
    if "convolutionbackward" in n or "convbackward" in n:
        return CONV_BWD
    if "convolution" in n or re.fullmatch(r"(mkldnn|cudnn|thnn)?conv(transpose)?[123]d", n):
        return CONV_FWD
    if any(k in n for k in ("scaleddotproduct", "flashattention", "efficientattention")):
        return ATTN
    if "softmax" in n or "attention" in n:
        return ATTN
    if short.lower() in _MATMUL_OPS or any(n.startswith(k) for k in _MATMUL_GRADS):
        return MATMUL
    if any(k in n for k in ("foreach", "adam", "optimizer", "lerp", "clipgradnorm", "sgd")):
        return OPT
    if any(k.replace("_", "") in n for k in _NORMS):
        return NORM
    if any(k in n for k in _ACTS):
        return ACT
    if op.startswith("aten::"):
        return None if short in _STRUCTURAL else ELEM
    if "backward0" in n or "backward1" in n:  # another autograd node: elementwise work
        return ELEM
    return None


def chain(event) -> list[str]:
    """The names of an event and its enclosing CPU events, innermost first."""
    names = []
    while event is not None:
        names.append(event.name)
        event = event.cpu_parent
    return names


def classify(kernel: str | None, ops: list[str]) -> str:
    """Category of a GPU kernel (`kernel`) launched inside `ops` (innermost first), or of a
    CPU op's own time (kernel None, ops = the op and its parents)."""
    if kernel is not None:
        c = kernel_category(kernel)
        if c is not None:
            return c
    for op in ops:
        c = op_category(op)
        if c is not None:
            return c
    return kernel_fallback(kernel) if kernel is not None else OTHER


def split_conv_backward(cats: list[str], names: list[str]) -> list[str]:
    """The unnamed kernels of one convolution_backward op: a reduction is the bias (weight)
    gradient; where the op's other half is named dgrad (wgrad), the rest is the other half."""
    named = set(cats)
    out = []
    for c, name in zip(cats, names):
        if c == CONV_BWD:
            bias = "reduce" in name.lower() or "splitk" in name.lower()
            if bias or (CONV_IN in named and CONV_W not in named):
                c = CONV_W
            elif CONV_W in named and CONV_IN not in named:
                c = CONV_IN
        out.append(c)
    return out


def gpu_times(prof, steps: int) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """ms per step by category from a CUDA profile, and every kernel name's row."""
    devices = {torch.autograd.DeviceType.CUDA}
    total_by_name: dict[str, float] = defaultdict(float)  # us over the profiled steps
    for e in prof.events():
        if e.device_type in devices:
            total_by_name[e.name] += e.time_range.end - e.time_range.start
    cats: dict[str, float] = defaultdict(float)
    rows: dict[tuple[str, str, str], float] = defaultdict(float)
    placed: dict[str, float] = defaultdict(float)
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CPU or not e.kernels:
            continue
        ops = chain(e)
        names = [k.name for k in e.kernels]
        kc = [classify(k.name, ops) for k in e.kernels]
        if CONV_BWD in kc:
            kc = split_conv_backward(kc, names)
        for k, c in zip(e.kernels, kc):
            cats[c] += k.duration
            placed[k.name] += k.duration
            rows[(k.name, c, e.name)] += k.duration
    for name, us in total_by_name.items():  # kernels no op claimed (launched from Python)
        rest = us - placed.get(name, 0.0)
        if rest > 0.5:
            c = classify(name, [])
            cats[c] += rest
            rows[(name, c, "-")] += rest
    table = [
        dict(kernel=k, category=c, op=o, ms=us / 1e3 / steps)
        for (k, c, o), us in sorted(rows.items(), key=lambda kv: -kv[1])
    ]
    return {c: us / 1e3 / steps for c, us in cats.items()}, table


def cpu_times(prof, steps: int) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """ms per step by category from a CPU profile: each op's own (self) time."""
    cats: dict[str, float] = defaultdict(float)
    rows: dict[tuple[str, str], float] = defaultdict(float)
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CPU or e.is_async:
            continue
        us = e.self_cpu_time_total
        if us <= 0:
            continue
        c = classify(None, chain(e))
        cats[c] += us
        rows[(e.name, c)] += us
    table = [
        dict(kernel=k, category=c, op=k, ms=us / 1e3 / steps)
        for (k, c), us in sorted(rows.items(), key=lambda kv: -kv[1])
    ]
    return {c: us / 1e3 / steps for c, us in cats.items()}, table


def profile_steps(step, steps: int, device: torch.device):
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync()
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        wall = time.perf_counter() - t0
    return prof, 1e3 * wall / steps


# FLOP kinds (flops_by_kind) -> categories
FLOP_CATEGORY = {
    "conv_forward": CONV_FWD,
    "conv_input_grad": CONV_IN,
    "conv_weight_grad": CONV_W,
    "matmul": MATMUL,
    "attention": ATTN,
}


def measure(name: str, vname: str, B: int, args, peak: float, device: torch.device) -> dict:
    variant = VARIANTS[vname]
    spec = preset(name)
    res = spec.image_size[0]
    CASES.setdefault(name, (name, res, None))  # library_step reads the preset from CASES
    free_memory()
    reset_compiler()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = variant.cudnn_benchmark
    model = build_model(spec.arch, spec.config)
    randomise_zero_weights(model).to(device).train()
    # FLOPs of one eager step of a few images (linear in the batch), before any compilation
    few = min(B, 4)
    count = VARIANTS["bf16" if variant.bf16 and device.type == "cuda" else "fp32"]
    kinds = flops_by_kind(Step(model, model, few, res, count, device))
    flops = {FLOP_CATEGORY[k]: v * B / few for k, v in kinds.items() if k in FLOP_CATEGORY}
    if variant.channels_last:
        use_channels_last(model)
    if variant.compile_mode is not None:
        compile_model(model, device, variant.compile_mode)
    step = (
        library_step(model, name, B, res, variant, device)
        if args.full_step
        else Step(model, model, B, res, variant, device)
    )
    t0 = time.perf_counter()
    step()
    sync()
    first = time.perf_counter() - t0
    wall_ms = 1e3 * median(time_windows(step, args.warmup, args.steps, args.windows))
    prof, profiled_wall_ms = profile_steps(step, args.steps, device)
    cats, kernels = (gpu_times if device.type == "cuda" else cpu_times)(prof, args.steps)
    del prof, step
    total = sum(cats.values())
    if cats.get(CONV_BWD, 0.0) > 0 and not cats.get(CONV_IN) and not cats.get(CONV_W):
        flops[CONV_BWD] = flops.pop(CONV_IN, 0.0) + flops.pop(CONV_W, 0.0)  # one op (CPU)
    rows = []
    for c in CATEGORIES:
        ms = cats.get(c, 0.0)
        if c not in ALWAYS and ms == 0.0:
            continue
        row: dict[str, Any] = dict(category=c, ms=ms, share=ms / total if total else 0.0)
        if c in flops:
            row["gflop"] = flops[c] / 1e9
            row["tflops"] = flops[c] / (ms / 1e3) / 1e12 if ms > 0 else float("nan")
            row["of_peak"] = row["tflops"] / peak
        rows.append(row)
    all_flops = sum(flops.values())
    return dict(
        preset=name,
        variant=vname,
        step="ddpm.train.train_step" if args.full_step else "forward+backward+AdamW",
        batch=B,
        device=device.type,
        params=count_params(model),
        first_step_s=first,
        wall_ms=wall_ms,
        img_s=B / (wall_ms / 1e3),
        profiled_wall_ms=profiled_wall_ms,
        kernel_ms=total,
        gpu_busy=total / wall_ms,
        gflop=all_flops / 1e9,
        tflops=all_flops / (total / 1e3) / 1e12 if total else float("nan"),
        tflops_wall=all_flops / (wall_ms / 1e3) / 1e12,
        peak_tflops=peak,
        categories=rows,
        kernels=kernels,
    )


def _n(x: float) -> str:
    """A number to about three significant figures, with thousands separators."""
    if x != x:  # nan
        return "-"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def fmt_table(r: dict[str, Any]) -> str:
    gpu = r["device"] == "cuda"
    unit, busy = ("kernels", "GPU busy") if gpu else ("ops (CPU self time)", "in ops")
    lines = [
        f"{r['preset']}, {r['step']}, {r['variant']}, batch {r['batch']} ({r['params']:,} "
        f"parameters): wall {r['wall_ms']:.2f} ms/step ({r['img_s']:,.0f} img/s), {unit} "
        f"{r['kernel_ms']:.2f} ms/step, {busy} {r['gpu_busy']:.0%}; {_n(r['gflop'])} "
        f"GFLOP/step, {_n(r['tflops_wall'])} TFLOP/s over the wall time; bf16 matmul peak "
        f"{_n(r['peak_tflops'])} TFLOP/s",
        "",
        "| category | ms/step | share | GFLOP/step | TFLOP/s | of peak |",
        "|---|---:|---:|---:|---:|---:|",
    ]

    def peak_share(x: float) -> str:
        return "-" if x != x else f"{x:.0%}"

    for c in r["categories"]:
        if "gflop" in c:
            rate = f"{_n(c['gflop'])} | {_n(c['tflops'])} | {peak_share(c['of_peak'])}"
        elif c["category"] in (NORM, ACT, ELEM, OPT):
            rate = "- | memory-bound | "
        else:
            rate = "- | | "
        lines.append(f"| {c['category']} | {c['ms']:.2f} | {c['share']:.1%} | {rate} |")
    ofp = peak_share(r["tflops"] / r["peak_tflops"])
    lines.append(
        f"| all {unit} | {r['kernel_ms']:.2f} | 100.0% | {_n(r['gflop'])} | "
        f"{_n(r['tflops'])} | {ofp} |"
    )
    return "\n".join(lines)


def fmt_kernels(r: dict[str, Any], n: int) -> str:
    lines = [f"top {n} kernels (ms/step, category, launching op):"]
    for k in r["kernels"][:n]:
        lines.append(f"  {k['ms']:7.3f}  {k['category']:28s} {k['op'][:40]:40s} {k['kernel'][:90]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="ddpm-cifar10,cifar10-8min", help="comma-separated")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--variant", default="bf16+CL+compile", choices=list(VARIANTS))
    p.add_argument(
        "--full-step",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the library's train_step (EMA, clipping, guard); --no-full-step: bare step",
    )
    p.add_argument("--steps", type=int, default=10, help="profiled (and timed) steps")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--top", type=int, default=25, help="kernels listed after each table")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", help="also write the records to this JSON file")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*(lru_cache|Profiler clears events).*")
    device = torch.device(args.device)
    env = environment()
    peak = matmul_peak_tflops() if device.type == "cuda" else float("nan")
    env["matmul_peak_tflops"] = peak
    print(f"{env}\nbf16 matmul peak measured: {peak:.0f} TFLOP/s", flush=True)
    records = []
    for name in args.preset.split(","):
        r = measure(name, args.variant, args.batch, args, peak, device)
        records.append(r)
        print(f"\n### {name}\n{fmt_table(r)}\n\n{fmt_kernels(r, args.top)}", flush=True)
        write_json(args.json, records, env)
    return records


if __name__ == "__main__":
    run_script(main)
