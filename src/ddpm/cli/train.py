"""`ddpm train`: flags -> TrainConfig -> `ddpm.train.train`, then the end-of-run pictures."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING

from ddpm.cli.args import (
    ARCH_FLAGS,
    add_device_arg,
    add_quiet_arg,
    int_list,
    level_list,
    positive_int,
    resolve_device,
)
from ddpm.cli.flags import add_setting_flags
from ddpm.errors import ConfigError
from ddpm.train.config import TrainConfig
from ddpm.train.distributed import world_from_env
from ddpm.train.recipes import RECIPES, recipe_settings, sampling_advice
from ddpm.train.settings import EVALUATION, settings_of

if TYPE_CHECKING:
    from ddpm.train.distributed import Dist


def add_train_args(p: argparse.ArgumentParser) -> None:
    """The flags of TrainConfig's settings (ddpm.train.config), generated from their
    declarations, and among them the flags that are no settings of the run."""
    before = {
        "learn_sigma": _add_arch_args,
        "steps": _add_recipe_arg,
        "log_every": _add_resume_arg,
        "tensorboard": lambda g: _add_picture_args(p, g),
    }
    instead = {"device": add_device_arg}
    add_setting_flags(p, TrainConfig, skip=(EVALUATION,), before=before, instead=instead)
    for_resume(p)


def add_train_eval_args(p: argparse.ArgumentParser) -> None:
    """`ddpm train` flags for FID during training (the values go to TrainConfig)."""
    add_setting_flags(p, TrainConfig, only=(EVALUATION,))
    for_resume(p)


GIVEN = "given_on_command_line"  # the dests of the flags given, as a frozenset
RESUMABLE_NOTE = " (may change on --resume)"


class _Given(argparse.Action):
    """Mixed into a flag's action: argparse calls it only when the flag is on the command line,
    which it then notes in args.given_on_command_line (a resumed run keeps its own values of the
    flags left out, where the parser's defaults would otherwise stand for them)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, GIVEN, getattr(namespace, GIVEN, frozenset()) | {self.dest})
        super().__call__(parser, namespace, values, option_string)


def for_resume(p: argparse.ArgumentParser) -> None:
    """Make each flag of `p` note that it was given (see _Given), and end the help of the
    settings' flags that may change on --resume by saying so."""
    settings = settings_of(TrainConfig)
    for a in p._actions:
        if a.option_strings and not isinstance(a, _Given | argparse._HelpAction):
            a.__class__ = type(f"Given{type(a).__name__}", (_Given, type(a)), {})
            if a.dest in settings and settings[a.dest][1].resumable:
                a.help = f"{a.help or ''}{RESUMABLE_NOTE}"
    p.set_defaults(**{GIVEN: frozenset()})


def _add_arch_args(g) -> None:
    """The preset's values to change (TrainConfig.model_overrides)."""
    g.add_argument(
        "--base-channels",
        type=positive_int,
        help="channels of the first level (default: the preset's)",
    )
    g.add_argument(
        "--channel-mults",
        type=int_list,
        help="width multiplier per level, e.g. 1,2,2,2 (default: the preset's)",
    )
    g.add_argument(
        "--num-res-blocks",
        type=positive_int,
        help="residual blocks per level (default: the preset's)",
    )
    g.add_argument(
        "--attention-levels",
        type=level_list,
        help="levels with self-attention, 0 = full resolution, e.g. 1 or 2,3, or none (the "
        "middle block's only; default: the preset's)",
    )
    g.add_argument(
        "--scale-shift",
        action=argparse.BooleanOptionalAction,
        help="adaptive GroupNorm: the time embedding scales and shifts each residual block's "
        "second normalisation instead of being added (Dhariwal & Nichol 2021; default: the "
        "preset's, off)",
    )


def _add_recipe_arg(g) -> None:
    g.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        help="start from a named set of settings, flags given here still win (default: none): "
        + "; ".join(f"{k}: {v.description.split(':')[0]}" for k, v in RECIPES.items()),
    )


def _add_resume_arg(g) -> None:
    g.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        help="continue from a checkpoint file or run folder; alone: the newest checkpoint in "
        "--out (default: start afresh). The run keeps the settings its checkpoint stored: only "
        "those marked '(may change on --resume)' may be given new values",
    )


def _add_picture_args(p: argparse.ArgumentParser, g) -> None:
    g.add_argument(
        "--final-pictures",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="at the end, draw process.png and process.gif: eight reverse chains with the "
        "grids' sampler (DDIM-50, eta 1), cut to fewer steps where a picture would take more "
        "than a quarter of the training time (at least 30 s)",
    )
    add_quiet_arg(p)


def apply_recipe(p: argparse.ArgumentParser, argv: list[str]) -> None:
    """`ddpm train --recipe NAME`: the recipe's settings become the defaults of `p`, so that
    every flag given on the command line still wins. An unknown name is left to the parser."""
    if not argv or argv[0] != "train":
        return
    # no abbreviations: here "--loss hybrid" would pass for "--loss-weight hybrid"
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--recipe")
    pre.add_argument("--loss-weight")
    pre.add_argument("--min-snr-gamma")
    pre.add_argument("--batch-size")
    known, _ = pre.parse_known_args(argv[1:])
    if known.recipe in RECIPES:
        # the global batch: --batch-size, else the recipe's from each torchrun process (a
        # bad --batch-size is left to the parser to name)
        batch = int(known.batch_size) if (known.batch_size or "").isdigit() else None
        settings = recipe_settings(known.recipe, _processes(), batch)
        # a recipe's Min-SNR γ belongs to its min-snr weighting: another weighting given on
        # the command line takes the γ away with it (unless γ is given too)
        if known.loss_weight not in (None, "min-snr") and known.min_snr_gamma is None:
            settings["min_snr_gamma"] = None
        p.set_defaults(**settings)


def _processes() -> int:
    """The number of torchrun processes; 1 where the environment is wrong, which
    distributed.init then says (before any work)."""
    try:
        return world_from_env()[2]
    except ConfigError:
        return 1


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig that the parsed flags (and a --recipe's defaults) describe."""
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: getattr(args, k) for k in ARCH_FLAGS if getattr(args, k) is not None}
    return TrainConfig(
        **{k: v for k, v in vars(args).items() if k in fields}, model_overrides=overrides
    )


def resumed_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """`--resume`: the run's settings as its checkpoint stored them, with the flags given on the
    command line (a --recipe's settings among them) that may change on resume; any other given
    flag must have the run's value (ddpm.train.resume). --out is where the run is now."""
    from ddpm.train.resume import read_run, resumed_config

    given = set(getattr(args, GIVEN, ()))
    settings = settings_of(TrainConfig)
    stored, model_config = read_run(args.resume, args.out)
    values = {k: getattr(args, k) for k in given if k in settings}
    if "recipe" in given and args.recipe in RECIPES:
        # the recipe as the run had it: at the run's global batch, whatever the number of
        # processes now (flags given beside it still win)
        batch = values.get("batch_size", stored.get("batch_size"))
        recipe = recipe_settings(args.recipe, batch=batch)
        values = {k: v for k, v in recipe.items() if k in settings} | values
    return resumed_config(
        stored,
        {**values, "out": args.out},
        model_config,
        {k: getattr(args, k) for k in ARCH_FLAGS if k in given},
    )


def run_train(args: argparse.Namespace) -> int:
    from ddpm.train import distributed

    if {"steps", "epochs"} <= set(getattr(args, GIVEN, ())):
        raise ConfigError("--steps and --epochs both say how long to train: give one of them")
    cfg = config_from_args(args) if args.resume is None else resumed_config_from_args(args)
    if cfg.fid_stats is not None and cfg.eval_every is None:
        raise ConfigError("--fid-stats is what the FID check compares with: give --eval-every N")
    # one process, or this process of a torchrun job
    dist = distributed.init(cfg.device, cfg.batch_size)
    try:
        return _train(cfg, args, dist)
    finally:
        distributed.shutdown()


def _train(cfg: TrainConfig, args: argparse.Namespace, dist: Dist) -> int:
    from ddpm.train import NonFiniteError, train

    try:
        result = train(cfg, resume=args.resume, progress=not args.quiet, announce=print, dist=dist)
    except NonFiniteError as e:
        if dist.is_main:  # every process stops at the same step, for the same reason
            print(f"ddpm train: error: {e}", file=sys.stderr)
        return 1
    if result.stopped_early:
        if dist.is_main:
            how = f"ddpm train --out {cfg.out} --resume"
            if dist.world_size > 1:
                how = f"the same torchrun command with --resume (any number of processes; {how})"
            print(f"stopped at step {result.step}; checkpoint {result.last_checkpoint}")
            print(f"resume with: {how}")
        # exit together: torchrun stops the job when a process exits with an error code
        dist.barrier()
        return 130
    if not dist.is_main:  # rank 0 writes the pictures
        return 0
    if result.last_checkpoint is None:
        print(f"nothing to do: the run in {cfg.out} is at step {result.step} (--steps {cfg.steps})")
        return 0
    wrote = final_pictures(cfg, result, args.final_pictures, not args.quiet, dist.device)
    print(
        f"trained {result.step} steps; wrote {', '.join(wrote)} and checkpoint "
        f"{result.last_checkpoint}"
    )
    if (flags := sampling_advice(args.recipe, cfg.out, cfg.max_minutes)) is not None:
        print(f"sample it as measured best (docs/benchmarks.md): ddpm sample {flags}")
    return 0


def _array_pictures(cfg, result, loaded, chain: bool) -> list[str]:
    """The end of a points / sequences run: the last preview plot as samples.png and, with
    `chain`, the denoising chain (the cloud of 1,000 points, or 4 curves) as process.png and
    process.gif. Returns what was written."""
    import shutil

    from ddpm.sampling.generate import save_array_process
    from ddpm.sampling.spec import SamplingSpec

    out = result.out
    shutil.copyfile(out / "samples" / f"step-{result.step:07d}.png", out / "samples.png")
    wrote = [str(out / "samples.png")]
    if chain:
        gif = out / "process.gif"
        spec = SamplingSpec("ddim", min(100, cfg.T), eta=cfg.sample_eta, seed=cfg.seed)
        save_array_process(loaded, out / "process.png", gif, spec)
        wrote.append(f"{out / 'process.png'} and .gif ({spec.short()})")
    wrote.append(str(out / "loss.png"))
    return wrote


def final_pictures(cfg, result, chain: bool, progress: bool, device=None) -> list[str]:
    """samples.png (the last grid, enlarged) and, with `chain`, process.png and process.gif:
    eight reverse chains drawn as the grids are (`ddpm.train.grid_spec`: DDIM-50 with eta 1
    by default), with fewer steps where that would overrun the picture budget
    (`ddpm.train.picture_budget`). Returns what was written, with the sampler that drew it.
    `device` None means cfg.device."""
    from ddpm.sampling.generate import (
        denoising_process,
        picture_plan,
        save_process,
        seconds_per_evaluation,
    )
    from ddpm.sampling.loaded import load_model
    from ddpm.train import grid_spec, picture_budget
    from ddpm.viz.grids import enlarge, grid_scale

    out = result.out
    device = resolve_device(cfg.device) if device is None else device
    loaded = load_model(result.last_checkpoint, device=device)
    if loaded.data is not None:
        return _array_pictures(cfg, result, loaded, chain)
    # the loop's grid of the last step is the same picture, already sampled: enlarge it
    last_grid = out / "samples" / f"step-{result.step:07d}.png"
    enlarge(last_grid, out / "samples.png", scale=grid_scale(loaded.shape))
    wrote = [f"{out / 'samples.png'} ({result.last_grid.short()})"]
    if chain:
        n = 8
        per_eval = seconds_per_evaluation(loaded.eps, loaded.shape, n, device)
        budget = picture_budget(cfg, result.train_seconds)
        T = loaded.schedule.T
        spec = picture_plan(grid_spec(cfg, T), T, per_eval, budget)
        frames = denoising_process(loaded, n, spec, progress=progress)
        save_process(frames, out / "process.png", out / "process.gif")
        wrote.append(f"{out / 'process.png'} and .gif ({spec.short()})")
    wrote.append(str(out / "loss.png"))
    return wrote
