"""Resuming a run with its own settings. Every checkpoint stores the run's TrainConfig as a dict
(`train_config`, ddpm.train.state.checkpoint_dict); a resumed run starts from it, so that a
setting left out keeps the run's value instead of taking the default. The settings declared
`resumable` (ddpm.train.settings: how long the run trains, how often it writes, how fast and
where it runs, what it measures) take a value given again; any other setting given with a
value of its own is refused before any work, each one named: changing the schedule, T, the
prediction or the network under a trained model would damage the run, not continue it."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch

from ddpm.errors import ConfigError
from ddpm.io import checkpoint as ckpt_io
from ddpm.train.config import TrainConfig
from ddpm.train.settings import settings_of
from ddpm.train.state import find_resume


def read_run(resume: str, out: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings stored in the checkpoint `resume` names (see find_resume): (train_config,
    model_config). Memory-mapped, so that the weights are not read here (train() loads them)."""
    path = find_resume(resume, out)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on unusual pickle protocols
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # not a checkpoint (or not one to map): load_checkpoint says what it is
        ckpt = None
    if not isinstance(ckpt, dict) or ckpt.get("format") != ckpt_io.FORMAT:
        ckpt = ckpt_io.load_checkpoint(path)  # raises CheckpointError, or loads it in full
    return dict(ckpt.get("train_config") or {}), dict(ckpt.get("model_config") or {})


def resumed_config(
    stored: dict[str, Any],
    given: dict[str, Any],
    model_config: dict[str, Any] | None = None,
    model_flags: dict[str, Any] | None = None,
) -> TrainConfig:
    """The config of a resumed run: the `stored` train_config, with the settings `given` on
    the command line (name -> value) where they are resumable. A key of `stored` that is no
    setting now (one since removed) is ignored; a setting added since has its default.
    `model_flags` (base_channels, ...: the preset's values that flags change) are checked
    against the run's network, `model_config`.

    ConfigError, in one line, when a given setting that is not resumable differs from the
    run's: `--resume keeps the run's settings; these differ: --schedule cosine (the run has
    linear), --T 500 (the run has 1000)`."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    settings = settings_of(TrainConfig)
    values = {k: v for k, v in stored.items() if k in fields}
    differ = []
    for name, (f, s) in settings.items():  # in the order declared, as --help lists them
        if name not in given:
            continue
        value = given[name]
        if s.resumable:
            values[name] = value
        elif not _same(value, values.get(name, f.default)):
            differ.append(_differs(s.flag_of(name), value, values.get(name, f.default)))
    network = {**values.get("model_overrides", {}), **(model_config or {})}
    for name, value in (model_flags or {}).items():
        if not _same(value, network.get(name)):
            differ.append(_differs(f"--{name.replace('_', '-')}", value, network.get(name)))
    if differ:
        raise ConfigError("--resume keeps the run's settings; these differ: " + ", ".join(differ))
    if "steps" in given and "epochs" not in given:
        values["epochs"] = None  # the run's length as given now: --steps instead of --epochs
    return TrainConfig(**values)


def _plain(v: Any) -> Any:
    """Lists as tuples (a checkpoint or a flag may hold either)."""
    return tuple(_plain(x) for x in v) if isinstance(v, list | tuple) else v


def _same(a: Any, b: Any) -> bool:
    return _plain(a) == _plain(b)


def _text(v: Any) -> str:
    if v is None:
        return "the default"
    if isinstance(v, bool):
        return "it on" if v else "it off"
    if isinstance(v, list | tuple):
        return ",".join(map(str, v)) or "none"
    return str(v)


def _differs(flag: str, given: Any, stored: Any) -> str:
    """`--T 500 (the run has 1000)`; a switch as given: `--no-flip (the run has it on)`."""
    if isinstance(given, bool):
        shown = flag if given else f"--no-{flag[2:]}"
    else:
        shown = f"{flag} {_text(given)}"
    return f"{shown} (the run has {_text(stored)})"
