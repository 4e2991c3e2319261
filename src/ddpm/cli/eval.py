"""`ddpm eval`: FID of a checkpoint's samples and its bits/dim on held-out data; for points
and sequences, MMD and energy distance to held-out data beside their two reference rows."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ddpm.cli.args import (
    ETA_HELP,
    GUIDANCE_HELP,
    SAMPLER_HELP,
    SPACING_HELP,
    STEPS_HELP,
    add_guide_args,
    add_inception_args,
    add_speed_args,
    add_split_arg,
    add_weights_args,
    fast_path,
    group,
    guide_path,
    guide_words,
    guided_by,
    json_arg,
    nonneg_float,
    positive_int,
    refuse_unguidable,
    sampling_spec,
    say_which_checkpoint,
    seed_int,
    write_json,
)
from ddpm.diffusion.process import VARIANCES
from ddpm.errors import ConfigError
from ddpm.sampling.guidance import CLASS_DISTRIBUTIONS
from ddpm.sampling.samplers import SAMPLERS, SPACINGS

if TYPE_CHECKING:
    from ddpm.train.distributed import Dist


def add_eval_args(p: argparse.ArgumentParser) -> None:
    add_eval_model_args(p)
    add_eval_what_args(p)
    add_eval_sampling_args(p)
    add_eval_output_args(p)


def add_eval_model_args(p: argparse.ArgumentParser) -> None:
    g = group(p, "model")
    g.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="a checkpoint (.pt), a run folder (its newest checkpoint), a safetensors export, "
        "or a diffusers UNet2DModel folder",
    )
    add_weights_args(g)


def add_eval_what_args(p: argparse.ArgumentParser) -> None:
    g = group(p, "what to evaluate")
    g.add_argument(
        "--fid-stats",
        type=Path,
        help="report FID against these reference statistics, from `ddpm fid-stats` "
        "(default: no FID)",
    )
    g.add_argument("--nll", action="store_true", help="report bits/dim on --data")
    g.add_argument(
        "--data",
        help="held-out images for --nll, any --data form; for a model of points or sequences "
        "the held-out data to compare samples with (toy:NAME draws fresh points; "
        "timeseries:FOLDER uses its test split) (default: none)",
    )
    add_split_arg(g)
    g.add_argument(
        "--train-data",
        help="points / sequences: the training data for the floor row (default: the "
        "checkpoint's --data and --split)",
    )
    g.add_argument(
        "--n",
        type=positive_int,
        help="FID samples (default 10000) / --nll test images (default 1000) / points and "
        "sequences: rows per compared set (default 2000, at most the data's)",
    )


def add_eval_sampling_args(p: argparse.ArgumentParser) -> None:
    """How the FID samples are drawn and the bound computed; then guidance, classes, seed."""
    g = group(p, "sampling and the bound")
    g.add_argument("--sampler", choices=SAMPLERS, default="ddim", help=SAMPLER_HELP)
    g.add_argument("--steps", type=positive_int, help=STEPS_HELP)
    g.add_argument("--eta", type=nonneg_float, help=ETA_HELP)
    g.add_argument(
        "--spacing",
        choices=SPACINGS,
        help=SPACING_HELP,
    )
    g.add_argument(
        "--clip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="clip x_0 predictions to [-1, 1] when sampling and in the bound (default: on for "
        "images; off, and refused, for standardised points and sequences)",
    )
    g.add_argument(
        "--variance",
        choices=VARIANCES,
        help="reverse variance, in the bound and the ddpm sampler: small (the posterior's "
        "beta-tilde_t), large (beta_t) or learned (Sigma_theta of a --learn-sigma model; its "
        "default)",
    )
    g.add_argument(
        "--nll-steps",
        type=positive_int,
        help="--nll: the bound of the K-step respaced model (what --sampler ddpm --steps K "
        "samples from; a true bound on its NLL, not on the T-step model's); default: all T",
    )
    g.add_argument(
        "--nll-t-samples",
        type=positive_int,
        help="--nll: estimate the bound from K stratified timesteps per image instead of all "
        "(unbiased; the standard error then includes the t sampling); K >= 2 (default: all)",
    )
    add_eval_guidance_args(g)


def add_eval_guidance_args(g: Any) -> None:
    g.add_argument(
        "--guidance",
        type=nonneg_float,
        default=0.0,
        metavar="W",
        help=GUIDANCE_HELP,
    )
    add_guide_args(g)
    g.add_argument(
        "--classes",
        dest="class_distribution",
        choices=CLASS_DISTRIBUTIONS,
        default="uniform",
        help="(class-conditional models) each FID sample's class, drawn from (--seed, i): "
        "uniformly (the default, as class-conditional FIDs are usually reported) or as often "
        "as in the training data (counts stored in the checkpoint)",
    )
    g.add_argument("--seed", type=seed_int, default=0, help="sample i depends on (seed, i) only")
    g.add_argument("--batch-size", type=positive_int, default=256, help="images per network batch")


def add_eval_output_args(p: argparse.ArgumentParser) -> None:
    json_arg(group(p, "output"), "the results")
    add_speed_args(p)  # for FID's sampling; the bound is always computed in float32
    add_inception_args(p)


def run_eval(args: argparse.Namespace) -> int:
    """Under torchrun, FID's samples are split over the processes (the value is the same at any
    number); bits/dim runs on rank 0, and rank 0 alone prints and writes."""
    from ddpm.train import distributed

    if args.fid_stats is None and not args.nll and args.data is None:
        raise ConfigError(
            "nothing to evaluate: give --fid-stats S (FID) and/or --nll --data D (images), "
            "or --data D (a model of points or sequences)"
        )
    if args.nll and args.data is None:
        raise ConfigError("--nll needs --data: the held-out images to score")
    if not args.nll and (args.nll_steps is not None or args.nll_t_samples is not None):
        raise ConfigError("--nll-steps and --nll-t-samples only apply with --nll")
    dist = distributed.init(args.device)
    try:
        return _eval(args, dist)
    finally:
        distributed.shutdown()


def _eval(args: argparse.Namespace, dist: Dist) -> int:
    from ddpm.eval.evaluate import find_inception, load_inception, load_stats
    from ddpm.sampling.loaded import load_model

    device, main = dist.device, dist.is_main
    reference = load_stats(args.fid_stats) if args.fid_stats is not None else None
    if reference is not None:
        find_inception(args.inception)  # before anything is decoded or sampled
    loaded = load_model(args.checkpoint, "cpu", args.raw_weights, args.ema)
    if loaded.data is not None:  # points / sequences: one process samples and prints
        return run_eval_arrays(args, loaded, device) if main else 0
    T = loaded.schedule.T
    conditional = loaded.num_classes is not None
    loaded = _checked_image_model(args, loaded, reference)
    # decoded before the model goes to the GPU: the loader forks
    nll_data = _nll_images(args, loaded) if args.nll and main else None
    net = load_inception(args.inception, device) if reference is not None else None
    loaded = loaded.to(device)
    chain = args.nll_steps or T
    if args.nll_t_samples is not None and not 2 <= args.nll_t_samples <= chain:
        raise ConfigError(
            f"--nll-t-samples must lie in [2, {chain}] (the steps of the bound), "
            f"got {args.nll_t_samples}"
        )
    variance = loaded.variance(args.variance)
    which, record = _which_weights(args, loaded)
    if reference is not None:
        record["fid"] = _report_fid(args, loaded, reference, net, dist, which, conditional)
    if nll_data is not None:
        record["nll"] = _report_nll(args, loaded, nll_data, variance, which, conditional)
    if main:
        write_json(args.json, record)
    return 0


def _checked_image_model(args: argparse.Namespace, loaded, reference) -> Any:
    """The flags checked against an image model, which comes back guided as they ask."""
    if args.train_data is not None:
        raise ConfigError("--train-data applies to models of points or sequences")
    if args.fid_stats is None and not args.nll:
        raise ConfigError(
            "nothing to evaluate: --data alone is for models of points or sequences; for "
            "images give --fid-stats S and/or --nll"
        )
    args.clip = True if args.clip is None else args.clip
    say_which_checkpoint(args.checkpoint, loaded)
    T = loaded.schedule.T
    if args.steps is not None and args.steps > T:
        raise ConfigError(f"--steps {args.steps} exceeds the model's T = {T}")
    if args.nll_steps is not None and args.nll_steps > T:
        raise ConfigError(f"--nll-steps {args.nll_steps} exceeds the model's T = {T}")
    conditional = loaded.num_classes is not None
    loaded = guided_by(loaded, args)
    if reference is not None:
        refuse_unguidable(loaded, args)
    if (
        reference is not None
        and conditional
        and args.class_distribution == "data"
        and not loaded.class_counts
    ):
        raise ConfigError(
            f"--classes data needs the training label counts, which {args.checkpoint} does not "
            "record; use --classes uniform"
        )
    return loaded


def _nll_images(args: argparse.Namespace, loaded) -> Any:
    """The held-out images of --nll, decoded at the model's size."""
    from ddpm.data.images import load_dataset

    C, H, W = loaded.shape
    return load_dataset(
        args.data, (H, W), C, split=args.split, stream=False, progress=not args.quiet
    )


def _which_weights(args: argparse.Namespace, loaded) -> tuple[str, dict[str, Any]]:
    """The weights evaluated, in words for the report lines and as the JSON record's start."""
    weights = "raw" if args.raw_weights else f"EMA {args.ema}" if args.ema else "EMA"
    record: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "step": loaded.step,
        "weights": weights.lower(),
    }
    which = f"{weights} weights at step {loaded.step}"
    if loaded.origin == "diffusers":  # a folder records neither the step nor which weights
        which = "the diffusers folder's weights"
        record.update(step=None, weights="diffusers")
    elif loaded.origin == "safetensors":
        which = f"exported weights of step {loaded.step}"
        record.update(weights="exported")
    return which, record


def _report_fid(
    args: argparse.Namespace, loaded, reference, net, dist: Dist, which: str, conditional: bool
) -> dict[str, Any]:
    """FID of the model's samples (split over the processes), printed by rank 0; its record."""
    from ddpm.eval.evaluate import model_fid
    from ddpm.sampling.generate import evaluations, resolve

    settings = resolve(loaded, sampling_spec(args))
    sampling = fast_path(loaded, args)
    progress = not args.quiet and dist.is_main
    r = model_fid(sampling, reference, net, args.n or 10000, settings, progress, dist)
    bf16 = ", bf16" if sampling.bf16 else ""
    procs = f", {dist.world_size} processes" if dist.world_size > 1 else ""
    nfe = evaluations(sampling, settings)
    if dist.is_main:
        print(
            f"FID {r.fid:.3f}: {r.n} samples, {settings.describe(conditional)}"
            f"{guide_words(args)}, {nfe} network evaluations{bf16}, {which}, "
            f"vs {args.fid_stats} ({r.seconds:.0f} s{procs})"
        )
    record = {
        **r.as_dict(),
        "nfe": nfe,
        "bf16": sampling.bf16,
        "stats": str(args.fid_stats),
    }
    if (guide := guide_path(args)) is not None:
        record.update(guide_model=str(guide), guide_ema=args.guide_ema)
    if args.guidance_interval is not None:
        record["guidance_interval"] = list(args.guidance_interval)
    return record


def _report_nll(
    args: argparse.Namespace, loaded, nll_data, variance: str, which: str, conditional: bool
) -> dict[str, Any]:
    """bits/dim of --n held-out images, printed; its record."""
    from ddpm.eval.nll import model_nll, select_images

    images = select_images(nll_data, args.n or 1000, args.seed)
    r = model_nll(
        loaded,
        images,
        variance,
        args.clip,
        args.seed,
        args.batch_size,
        not args.quiet,
        args.nll_steps,
        args.nll_t_samples,
    )
    print(
        f"NLL {r.bpd:.4f} ± {r.stderr:.4f} bits/dim (standard error): {r.n} images of "
        f"{nll_data.source}, {r.describe()}, variance {r.variance}, clip "
        f"{'on' if r.clip else 'off'}, {which} ({r.seconds:.0f} s)"
        + (", of the unconditional (null class) model" * conditional)
    )
    return {**r.as_dict(), "data": str(args.data)}


def run_eval_arrays(args: argparse.Namespace, loaded, device) -> int:
    """MMD, energy distance (and log-density, modes, TSTR where they apply) of the samples of
    a points / sequences model against `--data`, beside the floor and the Gaussian baseline."""
    from ddpm.data.arrays import load_arrays
    from ddpm.errors import DataError
    from ddpm.eval.arrays import evaluate_model
    from ddpm.sampling.generate import resolve

    kind = loaded.kind
    if args.fid_stats is not None or args.nll:
        raise ConfigError(f"FID and --nll are for images; this model is of {kind}")
    if args.clip:
        raise ConfigError(f"--clip clips x_0 to [-1, 1], the range of images; {kind} are not")
    loaded = guided_by(loaded, args)
    refuse_unguidable(loaded, args)
    settings = resolve(loaded, sampling_spec(args))
    ckpt_cfg = _train_config(args.checkpoint)
    scaler = loaded.data.scaler
    pad = bool(ckpt_cfg.get("pad_sequences", False))
    train_spec = args.train_data or ckpt_cfg.get("data")
    train_split = None if args.train_data else ckpt_cfg.get("split")
    # a toy's training reference is drawn from seed 0, its held-out points from seed + 1
    heldout = load_arrays(
        args.data, args.split, pad, scaler=scaler, default_split="test", toy_seed=args.seed + 1
    )
    train = load_arrays(train_spec, train_split, pad, scaler=scaler, toy_seed=0)
    for name, d in (("--data", heldout), ("the training data", train)):
        if d.shape != tuple(loaded.shape):
            raise DataError(
                f"{d.source}: {name} has samples of shape {d.shape}; the model's are "
                f"{tuple(loaded.shape)}"
            )
    loaded = loaded.to(device)
    report = evaluate_model(loaded, heldout, train, settings, args.n)
    weights = "raw" if args.raw_weights else "EMA"
    print("\n".join(report.lines(f"{weights} weights at step {loaded.step}")))
    write_json(
        args.json,
        {
            "checkpoint": str(args.checkpoint),
            "step": loaded.step,
            "weights": weights.lower(),
            "sampler": settings.describe(loaded.num_classes is not None),
            "data": args.data,
            "train_data": train_spec,
            **report.as_dict(),
        },
    )
    return 0


def _train_config(path: Path) -> dict[str, Any]:
    from ddpm.io.checkpoint import load_checkpoint

    return dict(load_checkpoint(path).get("train_config", {}))
