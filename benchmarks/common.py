"""Shared pieces of the GPU benchmarks: the peer's models (diffusers, optional), timing with
synchronisation, FLOP counting, the card's measured bf16 matmul rate, and a kernel profile."""

from __future__ import annotations

import gc
import inspect
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ddpm.errors import USER_ERRORS
from ddpm.models.layers import GroupNorm

# The peer's models. "ddpm-cifar10": Ho et al.'s CIFAR-10 network as diffusers writes it
# (google/ddpm-cifar10-32: one attention head, attention at 16x16, dropout 0.1), the same
# 35,746,307 parameters as our preset. "train_unconditional": the default model of diffusers'
# examples/unconditional_image_generation/train_unconditional.py (113.7M at 64x64).
PEER_CONFIGS: dict[str, dict[str, Any]] = {
    "ddpm-cifar10": dict(
        sample_size=32,
        block_out_channels=(128, 256, 256, 256),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=None,
        dropout=0.1,
    ),
    "train_unconditional": dict(
        sample_size=64,
        block_out_channels=(128, 128, 256, 256, 512, 512),
        layers_per_block=2,
        down_block_types=(
            "DownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
            "DownBlock2D",
            "AttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=(
            "UpBlock2D",
            "AttnUpBlock2D",
            "UpBlock2D",
            "UpBlock2D",
            "UpBlock2D",
            "UpBlock2D",
        ),
    ),
}


def diffusers_or_none():
    """The diffusers module, or None when it is not installed (the benchmarks then run ours)."""
    try:
        import diffusers
        from diffusers.utils import logging
    except ImportError:
        return None
    logging.set_verbosity_error()
    return diffusers


def peer_unet(name: str) -> nn.Module | None:
    diffusers = diffusers_or_none()
    if diffusers is None:
        return None
    kwargs = dict(PEER_CONFIGS[name])
    accepted = inspect.signature(diffusers.UNet2DModel.__init__).parameters
    if "dropout" in kwargs and "dropout" not in accepted:  # older diffusers: no dropout arg
        kwargs.pop("dropout")
    return diffusers.UNet2DModel(in_channels=3, out_channels=3, **kwargs)


def peer_call(model: nn.Module) -> Callable:
    """diffusers' UNet2DModel as a plain (x_t, t) -> eps function."""

    def call(x, t):
        return model(x, t, return_dict=False)[0]

    return call


def fuse_peer_norms(model: nn.Module) -> nn.Module:
    """diffusers' UNet2DModel given the GroupNorm kernels our --fused-norm uses, where they are
    a drop-in: each ResnetBlock2D's two GroupNorm + SiLU (with the time embedding added, or
    its scale and shift), the attention's GroupNorm and the output GroupNorm + SiLU. The same
    parameters and operations as diffusers' own forward, so the ratio against us is fair."""
    import types

    from diffusers.models.resnet import ResnetBlock2D

    for m in list(model.modules()):
        if isinstance(m, ResnetBlock2D) and _resnet_fusable(m):
            NormOnly.adopt(m.norm1)
            NormOnly.adopt(m.norm2)
            m.forward = types.MethodType(_fused_resnet_forward, m)
        elif isinstance(getattr(m, "group_norm", None), nn.GroupNorm):  # attention
            NormOnly.adopt(m.group_norm)
    if isinstance(getattr(model, "conv_act", None), nn.SiLU):
        NormSiLU.adopt(model.conv_norm_out)
        model.conv_act = nn.Identity()
    return model


def _resnet_fusable(m: nn.Module) -> bool:
    return (
        m.upsample is None
        and m.downsample is None
        and isinstance(m.nonlinearity, nn.SiLU)
        and m.time_embedding_norm in ("default", "scale_shift")
        and m.time_emb_proj is not None
        and isinstance(m.norm1, nn.GroupNorm)
        and isinstance(m.norm2, nn.GroupNorm)
    )


def _fused_resnet_forward(self, input_tensor, temb, *args, **kwargs):
    """diffusers' ResnetBlock2D.forward (0.42) for blocks without up/down-sampling, each
    GroupNorm with what follows it through ddpm.models.layers.GroupNorm.act."""
    h = self.conv1(self.norm1.act(input_tensor))
    if not self.skip_time_act:
        temb = self.nonlinearity(temb)
    temb = self.time_emb_proj(temb)[:, :, None, None]
    if self.time_embedding_norm == "default":
        h = self.norm2.act(h, add=temb)
    else:
        scale, shift = torch.chunk(temb, 2, dim=1)
        h = self.norm2.act(h, scale=scale, shift=shift)
    h = self.conv2(self.dropout(h))
    if self.conv_shortcut is not None:
        input_tensor = self.conv_shortcut(
            input_tensor.contiguous() if self.training else input_tensor
        )
    return (input_tensor + h) / self.output_scale_factor


class NormOnly(GroupNorm):
    """A GroupNorm whose plain call is the fused kernel where that runs (CUDA)."""

    @classmethod
    def adopt(cls, norm: nn.GroupNorm) -> GroupNorm:
        norm.__class__ = cls  # the same parameters and state
        norm.fused = True
        return norm

    def forward(self, x):
        return self.act(x, silu=False) if self.runs_fused(x) else super().forward(x)


class NormSiLU(NormOnly):
    """GroupNorm then SiLU as one module (diffusers' conv_norm_out followed by conv_act)."""

    def forward(self, x):
        return self.act(x) if self.runs_fused(x) else nn.functional.silu(GroupNorm.forward(self, x))


def randomise_zero_weights(model: nn.Module, std: float = 0.02) -> nn.Module:
    """Give zero-initialised weights small random values: timing on zeros flatters kernels,
    and a network whose output layer is zero is not what a trained one computes."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_windows(fn: Callable[[], Any], warmup: int, steps: int, windows: int) -> list[float]:
    """Seconds per call of `fn`, one number per window of `steps` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        out.append((time.perf_counter() - t0) / steps)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def matmul_peak_tflops(n: int = 8192, reps: int = 30) -> float:
    """Dense bf16 matmul rate of this card on random data (the ceiling for a net's FLOPs)."""
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=g)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16, generator=g)
    for _ in range(5):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    end.synchronize()
    return 2 * n**3 * reps / (start.elapsed_time(end) / 1e3) / 1e12


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of `fn` (forward and backward if it runs both), by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def reset_compiler() -> None:
    """Forget compiled graphs, so each variant compiles afresh (the on-disk caches remain)."""
    import torch._dynamo

    torch._dynamo.reset()


_CATEGORIES = (
    ("layout transposes", ("nchwtonhwc", "nhwctonchw", "transpose", "permute")),
    ("attention", ("flash", "fmha", "attention", "softmax")),
    ("optimizer + EMA (foreach)", ("multi_tensor", "adam", "foreach", "lpnorm")),
    ("fused norm/elementwise (Triton)", ("triton",)),
    (
        "conv + matmul (tensor cores)",
        ("conv", "xmma", "cudnn", "sm90", "sm80", "cutlass", "gemm", "fprop", "dgrad", "wgrad"),
    ),
    ("norm (eager)", ("group_norm", "groupnorm", "batch_norm", "batchnorm", "welford")),
    ("elementwise/reduce (eager)", ("elementwise", "vectorized", "reduce", "unrolled")),
)


def categorise(kernel: str) -> str:
    name = kernel.lower()
    for label, keys in _CATEGORIES:
        if any(k in name for k in keys):
            return label
    return "other"


def kernel_profile(fn: Callable[[], Any], steps: int = 5, top: int = 12) -> dict[str, Any]:
    """Where the GPU time of `steps` calls goes: per category, the top kernels, and the share
    of the wall time during which some kernel ran (low means the GPU waits on the host)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        fn()
    sync()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        sync()
        wall = time.perf_counter() - t0
    kernels: dict[str, float] = {}  # GPU kernels by name
    launchers: dict[str, float] = {}  # host ops by the GPU time of the kernels they launched
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", None)
        if us is None:
            us = getattr(e, "self_cuda_time_total", 0.0)
        if us <= 0:
            continue
        on_gpu = e.device_type != torch.autograd.DeviceType.CPU
        (kernels if on_gpu else launchers)[e.key] = us / 1e6 / steps
    busy = sum(kernels.values())
    cats: dict[str, float] = {}
    for k, s in kernels.items():
        cats[categorise(k)] = cats.get(categorise(k), 0.0) + s
    return {
        "wall_per_step_ms": 1e3 * wall / steps,
        "kernel_per_step_ms": 1e3 * busy,
        "gpu_busy": busy / (wall / steps),
        "categories_ms": {k: 1e3 * v for k, v in sorted(cats.items(), key=lambda kv: -kv[1])},
        "top_kernels_ms": [
            (k[:90], 1e3 * v) for k, v in sorted(kernels.items(), key=lambda kv: -kv[1])[:top]
        ],
        "top_launchers_ms": [
            (k[:90], 1e3 * v) for k, v in sorted(launchers.items(), key=lambda kv: -kv[1])[:top]
        ],
    }


def print_profile(label: str, prof: dict[str, Any]) -> None:
    print(
        f"\nprofile: {label}: wall {prof['wall_per_step_ms']:.2f} ms/step, kernels "
        f"{prof['kernel_per_step_ms']:.2f} ms/step, GPU busy {prof['gpu_busy']:.0%}"
    )
    for k, v in prof["categories_ms"].items():
        share = v / prof["kernel_per_step_ms"]
        print(f"  {k:34s} {v:8.2f} ms  {share:5.1%}")
    print("  top kernels:")
    for k, v in prof["top_kernels_ms"]:
        print(f"    {v:7.3f} ms  {k}")
    print("  host ops by the GPU time of their kernels:")
    for k, v in prof["top_launchers_ms"]:
        print(f"    {v:7.3f} ms  {k}")


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__}
    if torch.cuda.is_available():
        info["card"] = torch.cuda.get_device_name()
    d = diffusers_or_none()
    info["diffusers"] = d.__version__ if d is not None else None
    return info


def write_json(path: str | None, records: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({**extra, "records": records}, indent=1, default=str))


def flops_by_kind(fn: Callable[[], Any]) -> dict[str, int]:
    """FLOPs of one call of `fn` by kind: conv_forward, conv_input_grad, conv_weight_grad (the
    two halves of convolution_backward, counted apart), matmul (mm/addmm/bmm/baddbmm),
    attention (scaled-dot-product, forward and backward) and other, by FlopCounterMode."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten
    halves = {"conv_input_grad": 0, "conv_weight_grad": 0}

    def conv_backward(grad_out, x, w, bias, stride, pad, dil, transposed, out_pad, groups,
                      mask, out_shape=None, **kw):  # fmt: skip
        total = 0
        for key, m in (("conv_input_grad", 0), ("conv_weight_grad", 1)):
            if mask[m]:
                only = [i == m for i in range(3)]
                n = fc.conv_backward_flop(
                    grad_out, x, w, bias, stride, pad, dil, transposed, out_pad, groups, only,
                    out_val=out_shape,
                )  # fmt: skip
                halves[key] += n
                total += n
        return total

    with fc.FlopCounterMode(
        display=False, custom_mapping={aten.convolution_backward: conv_backward}
    ) as counter:
        fn()
    out = {"conv_forward": 0, "matmul": 0, "attention": 0, "other": 0, **halves}
    for op, n in counter.get_flop_counts().get("Global", {}).items():
        name = str(op).split(".")[-1] if "." in str(op) else str(op)
        if name in ("convolution", "_convolution", "cudnn_convolution", "_slow_conv2d_forward"):
            out["conv_forward"] += n
        elif name == "convolution_backward":
            continue  # counted in halves
        elif name in ("mm", "addmm", "bmm", "baddbmm", "_scaled_mm"):
            out["matmul"] += n
        elif "attention" in name:
            out["attention"] += n
        else:
            out["other"] += n
    return {k: int(v) for k, v in out.items()}


def run_script(main: Callable[[], Any]) -> None:
    """A script's `main()`, whose input errors (a missing checkpoint, unreadable data, a bad
    value) end it with one line on stderr, as `ddpm` prints them, not a traceback; an int it
    returns is the exit status."""
    try:
        status = main()
    except USER_ERRORS as e:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {e}")
    if isinstance(status, int):
        sys.exit(status)
