"""Speed features for the GPU, each one switchable and each one a no-op where it cannot help.

- channels-last memory (NHWC): cuDNN's tensor-core convolutions work in NHWC; a network kept
  in NCHW pays a layout transpose around every convolution.
- `torch.compile` of a model *in place* (`nn.Module.compile`), so parameter names stay the
  same and checkpoints and the EMA pairing are unaffected; it fuses GroupNorm + SiLU + the
  residual adds into a few generated kernels. When it cannot run (no Triton on CUDA, no C++
  compiler on the CPU) the model stays eager and a warning says why.
- bf16 autocast around a network call (for sampling; training enters autocast itself).
- the number of CPU threads, measured rather than assumed (`set_cpu_threads`): all cores on
  an idle machine, one thread when other work keeps the cores busy.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ddpm.errors import ConfigError

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile_mode(mode: str) -> None:
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")


def compile_unavailable(device: torch.device | str) -> str | None:
    """Why `torch.compile` cannot generate code for `device`, or None when it can."""
    device = torch.device(device)
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if device.type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:
            return "torch.utils._triton is missing"
        return None if has_triton() else "Triton is not installed"
    if device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "no C++ compiler (g++, c++ or clang++) on PATH"
    return None


def use_channels_last(model: nn.Module) -> nn.Module:
    """Store the model's 4-D weights channels-last (in place); returns the model."""
    return model.to(memory_format=torch.channels_last)


def compile_model(model: nn.Module, device: torch.device | str, mode: str = "default") -> bool:
    """Compile `model` in place for `device`, the whole network as one graph; False (and a
    warning) when that is impossible.

    Compilation happens lazily at the first call. `suppress_errors` makes a graph that the
    compiler then fails on run eagerly (with torch's own warning) instead of stopping a run.
    """
    check_compile_mode(mode)
    reason = compile_unavailable(device)
    if reason is not None:
        warnings.warn(f"compile ignored, running eagerly: {reason}", stacklevel=2)
        return False
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    # Timesteps and sizes stay fixed in a run; recompiling for a new batch size beats
    # dynamic-shape kernels, and the cache limit keeps a long sampling run from thrashing.
    model.compile(mode=None if mode == "default" else mode, dynamic=False)
    return True


def uses_cudagraphs(mode: str) -> bool:
    """Whether a compile mode replays CUDA graphs (which then need a step marker per step)."""
    return mode in ("reduce-overhead", "max-autotune")


def without_cudagraphs(mode: str) -> str:
    """The compile mode that generates the same kernels as `mode` but replays no CUDA graphs of
    its own (for a model inside a graph captured around it)."""
    return {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}.get(
        mode, mode
    )


def mark_step(mode: str | None) -> None:
    """Tell CUDA-graph trees that a new training step (or sampling step) begins."""
    if mode is not None and uses_cudagraphs(mode):
        torch.compiler.cudagraph_mark_step_begin()


def autocast_call(
    model: Callable[..., Tensor], device: torch.device | str, enabled: bool = True
) -> Callable[..., Tensor]:
    """`model` run under bf16 autocast on CUDA (returned unchanged elsewhere or if disabled)."""
    device = torch.device(device)
    if not enabled or device.type != "cuda":
        return model

    def call(*args: Tensor) -> Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return model(*args)

    return call


# --- CPU threads ------------------------------------------------------------------------------


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask; os.cpu_count() where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _thread_rate(threads: int, seconds: float) -> float:
    """Convolutions per second at `threads` torch threads, on a workload shaped like the small
    U-Net's (3x3 convolutions of 32 channels at 16x16 on a batch of 16)."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 32, 16, 16, generator=g)
    w = torch.randn(32, 32, 3, 3, generator=g)
    torch.nn.functional.conv2d(x, w, padding=1)  # warm-up at this thread count
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.nn.functional.conv2d(x, w, padding=1)
        n += 1
    return n / (time.perf_counter() - t0)


def pick_cpu_threads(seconds: float = 0.05) -> int:
    """The number of torch threads that computes fastest right now: all usable cores, or one.

    With every core busy elsewhere, OpenMP's threads wait for each other at every barrier
    and all-cores runs 5-15x slower than one thread (docs/benchmarks.md, "CPU threads"); on
    an idle machine all cores win. So both are timed on a short convolution workload, each
    `seconds` long, and one thread is kept only when it is faster than all cores. (The load
    average cannot decide: in a container it counts the whole host.)
    """
    cores = usable_cores()
    if cores == 1:
        return 1
    rates = {n: _thread_rate(n, seconds) for n in (cores, 1)}
    return cores if rates[cores] >= rates[1] else 1


def set_cpu_threads(threads: int | None) -> int:
    """torch.set_num_threads(threads), or when None: the count OMP_NUM_THREADS asks for where
    it is set (torchrun sets 1 per process: measuring there would oversubscribe the cores),
    else the measured best (`pick_cpu_threads`). Returns the count."""
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").strip():
        return torch.get_num_threads()  # torch read OMP_NUM_THREADS at start-up
    n = threads if threads is not None else pick_cpu_threads()
    torch.set_num_threads(n)
    return n
