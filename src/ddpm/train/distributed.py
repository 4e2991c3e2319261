"""Several processes, one model: data-parallel training launched by `torchrun`.

torchrun starts one process per GPU and tells each who it is through environment variables:
RANK (0 .. WORLD_SIZE-1 over all nodes), LOCAL_RANK (its GPU on this node), WORLD_SIZE, and
MASTER_ADDR / MASTER_PORT (where the processes meet). Without them (a plain `ddpm train`) there
is one process and no process group: exactly the single-device run.

What makes a run mean the same at any world size W:
- `--batch-size` is the global batch B; process r takes rows [r B/W, (r+1) B/W) of it (`rows`);
- everything random about global batch k (its images, flips, t, eps) is drawn whole on every
  process, from generators that do not depend on W, and then sliced;
- DistributedDataParallel averages the gradients over the processes, which for equal slices
  is the gradient of the global batch's mean loss, so every process applies the same update to
  the same weights: all hold identical models, EMAs and optimizer states, and rank 0 alone
  writes files.

Dropout masks (and the tutorial network's BatchNorm statistics) come from each process's own
slice and generator, so with dropout a multi-process run matches a one-process run in
distribution rather than bit for bit.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as tdist
from torch import Tensor, nn

from ddpm.errors import ConfigError

T = TypeVar("T")
ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class Dist:
    """This process's place in the job. With world_size 1 every method is a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cpu_group: Any = None  # a gloo group for host-side votes (None: the default group)

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes logs, pictures and checkpoints."""
        return self.rank == 0

    def rows(self, batch_size: int) -> slice | None:
        """This process's rows of a global batch (None: all of them, one process)."""
        if self.world_size == 1:
            return None
        b = batch_size // self.world_size
        return slice(self.rank * b, (self.rank + 1) * b)

    def shard(self, n: int) -> range:
        """This process's share of n items (image indices): contiguous, sizes differ by <= 1."""
        return range(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size)

    def barrier(self) -> None:
        if self.world_size > 1:
            tdist.barrier()

    def mean_(self, x: Tensor) -> Tensor:
        """x averaged over the processes, in place (on the device: no host sync)."""
        if self.world_size > 1:
            tdist.all_reduce(x, op=tdist.ReduceOp.SUM)
            x.div_(self.world_size)
        return x

    def gather_rows(self, x: Tensor) -> Tensor:
        """Every process's rows (N_r, ...) concatenated in rank order, on every process."""
        if self.world_size == 1:
            return x
        n = torch.tensor([x.shape[0]], device=x.device)
        counts = [torch.zeros_like(n) for _ in range(self.world_size)]
        tdist.all_gather(counts, n)
        sizes = [int(c) for c in counts]
        padded = x.new_zeros((max(sizes), *x.shape[1:]))
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        tdist.all_gather(parts, padded.contiguous())
        return torch.cat([p[:s] for p, s in zip(parts, sizes)])

    def on_main(self, fn: Callable[[], T]) -> T:
        """fn() run on rank 0 alone, its result (or the error it raised) given to every process.
        For what only rank 0 can see (a checkpoint on its disk) or should compute once."""
        if self.world_size == 1:
            return fn()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except Exception as e:
                box[0] = ("error", e)
        # Pickled between our own processes; the checkpoint itself was read with
        # weights_only=True on rank 0.
        tdist.broadcast_object_list(box, src=0, device=self.device)
        kind, value = box[0]
        if kind == "error":
            raise value
        return value


def all_true(flag: Tensor) -> Tensor:
    """A bool tensor that is True only where it is True in every process of the default group
    (an all-reduce on the device: no host sync)."""
    if not (tdist.is_available() and tdist.is_initialized()) or tdist.get_world_size() == 1:
        return flag
    f = flag.to(torch.int32)  # NCCL reduces no bools
    tdist.all_reduce(f, op=tdist.ReduceOp.MIN)
    return f.bool()


def gather_equal_rows(x: Tensor) -> Tensor:
    """Every process's rows of the same count (b, ...) concatenated in rank order: the global
    batch's (W b, ...), on every process (one all-gather on the device: no host sync)."""
    if not (tdist.is_available() and tdist.is_initialized()) or tdist.get_world_size() == 1:
        return x
    out = x.new_empty((tdist.get_world_size() * x.shape[0], *x.shape[1:]))
    tdist.all_gather_into_tensor(out, x.contiguous())
    return out


def _env_int(name: str) -> int:
    text = os.environ.get(name, "")
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(
            f"environment variable {name} must be a non-negative integer, got {text!r}"
        )
    return value


def world_from_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) as torchrun sets them; (0, 0, 1) outside torchrun."""
    if "WORLD_SIZE" not in os.environ:
        return 0, 0, 1
    world = _env_int("WORLD_SIZE")
    if world <= 1:
        return 0, 0, 1
    missing = [v for v in ENV if v not in os.environ]
    if missing:
        raise ConfigError(
            f"WORLD_SIZE is {world} but {' and '.join(missing)} not set: start several "
            "processes with torchrun (torchrun --nproc-per-node N -m ddpm train ...)"
        )
    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK")
    if rank >= world:
        raise ConfigError(f"RANK {rank} is not below WORLD_SIZE {world}")
    return rank, local, world


def process_device(name: str, local_rank: int, world_size: int) -> torch.device:
    """The device of one process: under torchrun, GPU LOCAL_RANK of its node."""
    from ddpm.train.config import resolve_device

    if world_size == 1:
        return resolve_device(name)
    kind = name.split(":")[0]
    if name == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cpu":
        return torch.device("cpu")
    if kind != "cuda":
        raise ConfigError(f"device {name} cannot be shared by several processes; use cuda or cpu")
    if ":" in name:
        raise ConfigError(
            f"device {name} names one GPU, but under torchrun process r uses GPU LOCAL_RANK: "
            "use --device cuda (or auto), and CUDA_VISIBLE_DEVICES to choose the GPUs"
        )
    if not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for, but torch sees no CUDA GPU")
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"LOCAL_RANK {local_rank}, but torch sees only {torch.cuda.device_count()} GPU(s) on "
            "this node: start at most that many processes per node (--nproc-per-node)"
        )
    return torch.device("cuda", local_rank)


def init(device: str = "auto", batch_size: int | None = None) -> Dist:
    """Join the job torchrun started (NCCL between GPUs, gloo between CPU processes), or, with
    one process, return a Dist of world size 1 without a process group. A process group that
    is already initialised (by a caller of the library) is used as it is. The device and the
    global `batch_size` are checked first, so that a bad flag fails at once on every process
    instead of leaving the others waiting."""
    if tdist.is_available() and tdist.is_initialized():
        rank, world = tdist.get_rank(), tdist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
    else:
        rank, local, world = world_from_env()
    if batch_size is not None:
        check_batch(batch_size, world)
    dev = process_device(device, local, world)
    if world == 1:
        return Dist(device=dev)
    if not tdist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
            tdist.init_process_group("nccl", device_id=dev)
        else:
            tdist.init_process_group("gloo")
    # the host-side vote (`Votes`) must not queue behind GPU work: a gloo group on the CPU
    cpu_group = None if tdist.get_backend() == "gloo" else tdist.new_group(backend="gloo")
    return Dist(rank, world, local, dev, cpu_group)


def shutdown() -> None:
    """Leave the process group (if any), so that NCCL shuts down cleanly."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def check_batch(batch_size: int, world_size: int) -> None:
    if batch_size % world_size:
        raise ConfigError(
            f"batch_size {batch_size} must be divisible by the number of processes "
            f"({world_size}): --batch-size is the global batch, split evenly"
        )


def seed_process(seed: int, dist: Dist, step: int) -> None:
    """Give each process its own global generator (dropout), seeded from (seed, rank, step)."""
    if dist.world_size > 1:
        torch.manual_seed((seed * 1_000_033 + dist.rank * 7_919 + step) % 2**63)


def wrap(model: nn.Module, dist: Dist, bucket_mb: float = 25.0) -> nn.Module:
    """`model` in DistributedDataParallel (DDP), which all-reduces the gradients bucket by bucket
    as backward produces them. The model keeps its parameters (DDP holds the same tensors), so
    checkpoints and the EMA use `model` itself.

    The gradients live in the buckets (no copy, less memory). A compiled model stays one graph
    (torch._dynamo.config.optimize_ddp off), so that its CUDA graphs stay whole; the
    all-reduce then follows the backward pass rather than overlapping it.
    """
    import torch._dynamo
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch._dynamo.config.optimize_ddp = False
    # Channels-last 1x1 convolution weights have strides (C, 1, C, C) and their gradients
    # (C, 1, 1, 1): the same memory, which DDP's reducer takes for a layout mismatch and warns
    # about on every rank ("may impair performance"). The copy it then makes is part of the
    # 95-97% scaling efficiency measured on H100s (docs/speed.md): not worth a warning.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DDP(
        model,
        device_ids=[dist.device.index] if dist.device.type == "cuda" else None,
        bucket_cap_mb=bucket_mb,
        gradient_as_bucket_view=True,
    )


class Votes:
    """Host-side values (a stop request, the share of the time budget spent) agreed by every
    process without waiting on the GPU: each step's values go through a max over a CPU (gloo)
    group in the background and are read one step later, so every process sees the same
    answer at the same step.

    With one process the values are returned as they are, at once.
    """

    def __init__(self, dist: Dist):
        self.dist = dist
        self.pending: tuple[Any, Tensor] | None = None

    def __call__(self, *values: float) -> tuple[float, ...]:
        if self.dist.world_size == 1:
            return values
        agreed = (0.0,) * len(values)
        if self.pending is not None:
            work, votes = self.pending
            work.wait()
            agreed = tuple(votes.tolist())
        votes = torch.tensor(values, dtype=torch.float64)
        work = tdist.all_reduce(
            votes, op=tdist.ReduceOp.MAX, group=self.dist.cpu_group, async_op=True
        )
        self.pending = (work, votes)
        return agreed

    def close(self) -> None:
        """Wait for the last vote (every process casts the same number of votes)."""
        if self.pending is not None:
            self.pending[0].wait()
            self.pending = None
