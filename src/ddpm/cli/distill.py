"""`ddpm distill`: progressive distillation of a trained model into one that samples in K
steps (`ddpm.train.distill`). Each round is a training run of the teacher's own settings, with
the round's steps, learning rate and time; the last round's student lands in --out, the
earlier ones in --out/round-<steps>/. Run the same command with --resume to finish rounds a
stop cut short."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ddpm.cli.args import (
    add_device_arg,
    add_quiet_arg,
    group,
    nonneg_float,
    nonneg_int,
    output_folder,
    positive_float,
    positive_int,
)
from ddpm.diffusion.process import PREDICTIONS
from ddpm.errors import ConfigError
from ddpm.progress import count


def add_distill_args(p: argparse.ArgumentParser) -> None:
    g = group(p, "distillation")
    g.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        help="the teacher: a training checkpoint or run folder (its newest checkpoint)",
    )
    g.add_argument(
        "--out", required=True, type=output_folder("student folder"), help="the student's folder"
    )
    g.add_argument(
        "--steps",
        type=positive_int,
        default=4,
        help="the student's sampling steps, a power of two (default: %(default)s)",
    )
    g.add_argument(
        "--from-steps",
        type=positive_int,
        help="the teacher's DDIM steps in the first round, a power of two; each round halves "
        "them (Salimans & Ho 2022 start from 1024 or more; default: 64, or the steps a "
        "distilled teacher was distilled to)",
    )
    g.add_argument(
        "--round-steps",
        type=positive_int,
        help="optimisation steps of each round (default: 300; with --max-minutes, as many as "
        "its share of the time allows)",
    )
    g.add_argument(
        "--max-minutes",
        type=positive_float,
        help="a wall-clock budget for all rounds, shared equally (default: none)",
    )
    g.add_argument(
        "--guidance",
        type=nonneg_float,
        default=0.0,
        help="a class-conditional teacher's classifier-free guidance weight w, learnt by the "
        "first round's student: the student then draws guided pictures with one network call "
        "a step (Meng et al. 2023; default: %(default)s, unguided)",
    )
    g.add_argument(
        "--prediction",
        choices=PREDICTIONS,
        help="what the student's network predicts (default: the teacher's, but v for an eps "
        "teacher distilled to 1 or 2 steps). From pure noise x_0 = (z - σ ε)/α multiplies an "
        "eps student's error by 1/α, about 160 at t = T on the linear schedule; a v student "
        "starts from the teacher's weights and learns its new output in the first round, as "
        "Salimans & Ho 2022 distil into v",
    )
    g.add_argument("--lr", type=positive_float, help="default: the teacher's learning rate")
    g.add_argument(
        "--warmup", type=nonneg_int, default=20, help="warm-up steps a round (default: %(default)s)"
    )
    g.add_argument("--batch-size", type=positive_int, help="default: the teacher's")
    g.add_argument("--data", help="the training data (default: the teacher's)")
    g.add_argument("--resume", action="store_true", help="finish the rounds in --out")
    add_quiet_arg(p)
    add_device_arg(group(p, "speed"))


def round_config(teacher: dict, args: argparse.Namespace, k: int, source: Path, out: Path):
    """The TrainConfig of the round whose student takes k steps, taught by `source`."""
    from ddpm.train import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    settings = {key: value for key, value in teacher.items() if key in known}
    rounds = rounds_of(args, teacher)
    steps = round_steps(args)
    settings.update(
        out=str(out),
        distill_from=str(source),
        distill_steps=k,
        distill_guidance=args.guidance if k == rounds[0] else 0.0,  # later teachers are guided
        steps=steps,
        epochs=None,
        warmup=args.warmup,
        lr_decay="cosine",
        max_minutes=args.max_minutes / len(rounds) if args.max_minutes else None,
        snapshot_minutes=(),
        eval_every=None,
        sample_every=steps,
        checkpoint_every=steps,
        sample_steps=k,
        sample_eta=0.0,
        sample_sampler="ddim",
        device=args.device,
        step_graph=False,  # the teacher is not captured in a step graph (step_graph_unavailable)
        fused_norm=False,  # whose kernels gain only inside that graph (the recipe's note)
    )
    settings["prediction"] = student_prediction(teacher, args)
    if settings["prediction"] != teacher.get("prediction"):
        # a new output, with its plain loss: for v Salimans & Ho's SNR + 1 weight on x_0 (on the
        # digits 0.19 RMSE in 1 step, where Min-SNR-5 weights gave 0.22)
        settings.update(loss_weight="none", min_snr_gamma=None)
    for key in ("lr", "batch_size", "data"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    return TrainConfig(**settings)


def student_prediction(teacher: dict, args: argparse.Namespace) -> str:
    """--prediction, or the teacher's, but v where an eps student would end in 1 or 2 steps:
    on the bundled digits its single step drew noise (RMSE 0.94 to the teacher's 64 steps)
    where a v student's drew digits (0.19; docs/benchmarks.md)."""
    if args.prediction is not None:
        return args.prediction
    own = teacher.get("prediction") or "eps"
    return "v" if own == "eps" and args.steps <= 2 else own


def round_steps(args: argparse.Namespace) -> int:
    """--round-steps, or without it 300 steps a round, or with --max-minutes no limit but
    the time (as `ddpm train --recipe` sets its steps)."""
    if args.round_steps is not None:
        return args.round_steps
    return 10_000_000 if args.max_minutes else 300


def rounds_of(args: argparse.Namespace, teacher: dict) -> list[int]:
    """The rounds' student steps. A distilled teacher is distilled on from its own steps, the
    only ones it was trained to take."""
    from ddpm.train.distill import check_steps

    own = teacher.get("distill_steps")
    if own and args.from_steps not in (None, own):
        raise ConfigError(
            f"--from-steps {args.from_steps}: the teacher {args.checkpoint} was distilled to "
            f"draw in {count(own, 'step')}; distil it on from --from-steps {own}"
        )
    return check_steps(args.steps, args.from_steps or own or 64, int(teacher["T"]))


def run_distill(args: argparse.Namespace) -> int:
    from ddpm.data.arrays import is_array_spec
    from ddpm.io import checkpoint as ckpt_io
    from ddpm.io.interchange import model_path
    from ddpm.train import distributed

    source = model_path(args.checkpoint)
    must = f"{args.checkpoint}: the teacher must be a training checkpoint (.pt)"
    # an export is refused as one, before its loader calls it malformed
    if source.exists() and source.suffix != ".pt":
        raise ConfigError(f"{must}, not an export")
    teacher = (ckpt := ckpt_io.load_checkpoint(source)).get("train_config")
    if not teacher:
        raise ConfigError(must)
    if args.data is not None and is_array_spec(args.data) != is_array_spec(teacher.get("data")):
        kinds = ("pictures", "points or sequences")
        raise ConfigError(
            f"--data {args.data}: {kinds[is_array_spec(args.data)]}, but the teacher {source} "
            f"is a model of {kinds[is_array_spec(teacher.get('data'))]}; distil on its own data"
        )
    if args.guidance and not (ckpt.get("model_config") or {}).get("num_classes"):
        raise ConfigError(f"--guidance {args.guidance:g}: {source} is not class-conditional")
    rounds = rounds_of(args, teacher)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.resume:
        raise ConfigError(f"--out {out} is not empty: pass --resume to finish its rounds")
    # one process, or this process of a torchrun job: every round trains in DDP like ddpm train
    first = round_config(teacher, args, rounds[0], source, out)
    dist = distributed.init(first.device, first.batch_size)
    try:
        return _distill(args, teacher, rounds, source, out, dist)
    finally:
        distributed.shutdown()


def _distill(args, teacher: dict, rounds: list[int], source: Path, out: Path, dist) -> int:
    from ddpm.io import checkpoint as ckpt_io
    from ddpm.train import train

    say = print if dist.is_main else lambda *_: None
    folders = [out / f"round-{k}" for k in rounds[:-1]] + [out]
    kept = [ckpt_io.list_checkpoints(f) if f.is_dir() else [] for f in folders]
    for j, (k, folder, done) in enumerate(zip(rounds, folders, kept)):
        cfg = round_config(teacher, args, k, source, folder)
        # a round finished before: all its steps, or a later round started from it
        if done and (ckpt_io.load_checkpoint(done[-1])["step"] >= cfg.steps or any(kept[j + 1 :])):
            source = done[-1]
            continue
        if not args.quiet:
            was = teacher.get("prediction")
            new = f" (the student predicts {cfg.prediction}, the teacher {was})"
            new = new if j == 0 and cfg.prediction != was else ""
            say(f"round {j + 1} of {len(rounds)}: {2 * k} teacher steps -> {k}{new}")
        result = train(cfg, resume="auto" if done else None, progress=not args.quiet, dist=dist)
        if result.stopped_early or result.last_checkpoint is None:
            say(f"stopped; finish with: ddpm distill ... --out {out} --resume")
            dist.barrier()
            return 130
        source = result.last_checkpoint
    steps = count(args.steps, "step")
    say(f"distilled to {steps}: {source}; sample: ddpm sample --checkpoint {out}")
    return 0
