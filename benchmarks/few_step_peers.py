"""Our few-step samplers against diffusers' multistep schedulers on the same weights: one
diffusers DDPMPipeline folder (what `ddpm export CKPT --format diffusers --out DIR` writes) is
sampled by both at the same number of network evaluations (NFE), image i from the same x_T
(`per_sample_noise` of (seed, i), as `ddpm.sampling.generate.generate` draws it), and both are
scored by the same FID code (`ddpm.eval.evaluate.model_stats`'s features and accumulator).

Ours: `dpm-solver` (DPM-Solver++(2M)), `dpm-solver-3m`, `unipc` (order 2, 3 from 20 steps) and
`ipndm`, each on its default time grid and, at the NFEs `ddpm tune-steps` made one for
(DIR/tuned-steps.json), on the tuned grid (`--our-spacings`: other grids too); x̂_0 is clipped
at every step as `ddpm eval` does (`--no-clip`: not).
Diffusers': `DPMSolverMultistepScheduler` (dpmsolver++, orders 2 and 3) and
`UniPCMultistepScheduler` (bh2, its default order 2 and the order 3 it recommends for
unconditional pixel models), each built `from_config` of the folder's scheduler, with
timestep_spacing "linspace" (its default) and "trailing", and 2M with Karras sigmas too;
the UNet is diffusers' `UNet2DModel` of the folder, its calls counted (each run must make
exactly NFE), the result clipped to [-1, 1]. Both networks run in float32 (`--bf16`: both under
bf16 autocast).

    ddpm export runs/cifar/snapshot-8min.pt --format diffusers --out runs/cifar-diffusers
    python benchmarks/few_step_peers.py --model runs/cifar-diffusers \
        --stats cifar10-train.npz --inception fid-inception-fp16.pt \
        --n 10000 --nfe 5,10,20 --json few-step-peers.json

Expected: a table of FID-10k per NFE for each solver; results are recorded in docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from common import diffusers_or_none, run_script

from ddpm.data.images import to_uint8
from ddpm.eval.evaluate import load_inception, load_stats, model_stats
from ddpm.eval.fid import FIDStats, StatsAccumulator, features, fid_from_stats
from ddpm.sampling.grids import GRIDS
from ddpm.sampling.loaded import load_model
from ddpm.sampling.noise import per_sample_noise, sample_generators
from ddpm.sampling.samplers import DEFAULT_SPACING
from ddpm.sampling.spec import SamplingSpec

OURS = ("dpm-solver", "dpm-solver-3m", "unipc", "ipndm")
DPM = "DPMSolverMultistepScheduler"
SPACINGS = ("linspace", "trailing")
# diffusers' side: name -> (scheduler class, options, its spacings). A spacing is diffusers'
# timestep_spacing, or "karras": use_karras_sigmas (the sigmas then set the timesteps)
PEERS: dict[str, tuple[str, dict, tuple[str, ...]]] = {
    "dpm-solver++ 2M": (
        DPM,
        dict(algorithm_type="dpmsolver++", solver_order=2),
        (*SPACINGS, "karras"),
    ),
    "dpm-solver++ 3M": (DPM, dict(algorithm_type="dpmsolver++", solver_order=3), SPACINGS),
    "unipc bh2": ("UniPCMultistepScheduler", {}, SPACINGS),
    "unipc bh2 3": ("UniPCMultistepScheduler", dict(solver_order=3), SPACINGS),
}


def peer_scheduler(diffusers, config, name: str, spacing: str):
    """A fresh scheduler (they keep state) of PEERS[name] on `spacing`."""
    cls, options, _ = PEERS[name]
    spaced = {"use_karras_sigmas": True} if spacing == "karras" else {"timestep_spacing": spacing}
    return getattr(diffusers, cls).from_config(config, **options, **spaced)


@torch.no_grad()
def peer_sample(unet, sched, x_T: torch.Tensor, nfe: int, bf16: bool = False) -> torch.Tensor:
    """diffusers' sampling loop from x_T (standard normal) with `nfe` UNet calls (unclipped)."""
    x = x_T * sched.init_noise_sigma
    sched.set_timesteps(nfe, device=x.device)
    calls = 0
    for t in sched.timesteps:
        x_in = sched.scale_model_input(x, t)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            eps = unet(x_in, t).sample
        calls += 1
        x = sched.step(eps.to(x.dtype), t, x).prev_sample
    if calls != nfe:
        raise AssertionError(f"{type(sched).__name__} made {calls} UNet calls for NFE {nfe}")
    return x


def peer_stats(unet, new_scheduler, net, nfe: int, args, shape) -> FIDStats:
    """FIDStats of args.n images of diffusers' loop, batch by batch as model_stats; each batch
    from image i's x_T as ours and a fresh scheduler (`new_scheduler()`)."""
    device = next(unet.parameters()).device
    acc = StatsAccumulator()
    for start in range(0, args.n, args.batch_size):
        stop = min(start + args.batch_size, args.n)
        gens = sample_generators(args.seed, range(start, stop), device)
        x_T = per_sample_noise(shape, gens, device)
        x = peer_sample(unet, new_scheduler(), x_T, nfe, args.bf16).clamp(-1, 1)
        acc.update(features(net, to_uint8(x), device))
    return acc.stats()


def our_cases(
    loaded, nfes: list[int], samplers=OURS, spacings=("default", "tuned")
) -> list[tuple[str, str, list[int]]]:
    """(sampler, spacing, NFEs) of our rows, grid by grid: "default" is each sampler's own,
    "tuned" the model's where `ddpm tune-steps` made one, any other name that grid."""
    tuned = [k for k in nfes if k in loaded.tuned]
    cases: list[tuple[str, str, list[int]]] = []
    for spacing in spacings:
        for s in samplers:
            grid = DEFAULT_SPACING[s] if spacing == "default" else spacing
            ks = tuned if grid == "tuned" else nfes
            if ks and (s, grid, ks) not in cases:
                cases.append((s, grid, ks))
    return cases


def run_ours(loaded, net, ref, args, nfes: list[int], rows: list[dict], save) -> None:
    """Our rows, appended to `rows`; the network's calls are counted (NFE per batch)."""
    calls = [0]
    loaded.model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    for sampler, spacing, ks in our_cases(loaded, nfes, args.ours, args.our_spacings):
        row = new_row("ours", sampler, spacing, clip=not args.no_clip)
        rows.append(row)
        for k in ks:
            spec = SamplingSpec(
                sampler=sampler,
                steps=k,
                spacing=spacing,
                clip=False if args.no_clip else None,  # None: on, as for any images
                seed=args.seed,
                batch_size=args.batch_size,
            )
            calls[0], t0 = 0, time.perf_counter()
            stats = model_stats(loaded, net, args.n, spec)
            batches = -(-args.n // args.batch_size)
            if calls[0] != k * batches:
                raise AssertionError(f"{sampler}: {calls[0]} network calls, not {k} x {batches}")
            record(row, k, fid_from_stats(stats, ref), time.perf_counter() - t0)
            save()


def run_peers(diffusers, folder, device, net, ref, args, nfes, shape, rows, save) -> None:
    """diffusers' rows, appended to `rows`."""
    unet = diffusers.UNet2DModel.from_pretrained(folder, subfolder="unet").to(device).eval()
    config = diffusers.DDPMScheduler.from_pretrained(folder, subfolder="scheduler").config
    for name, (_, _, spacings) in PEERS.items():
        for spacing in [s for s in spacings if s in args.peer_spacings]:
            row = new_row("diffusers", name, spacing, clip=False)
            rows.append(row)
            new = functools.partial(peer_scheduler, diffusers, config, name, spacing)
            for k in nfes:
                t0 = time.perf_counter()
                stats = peer_stats(unet, new, net, k, args, shape)
                record(row, k, fid_from_stats(stats, ref), time.perf_counter() - t0)
                save()


def new_row(side: str, sampler: str, spacing: str, clip: bool) -> dict:
    return {"side": side, "sampler": sampler, "spacing": spacing, "clip_x0": clip,
            "fid": {}, "seconds": {}}  # fmt: skip


def record(row: dict, nfe: int, fid: float, seconds: float) -> None:
    row["fid"][str(nfe)], row["seconds"][str(nfe)] = fid, seconds
    label = f"{row['side']} {row['sampler']} {row['spacing']}"
    print(f"{label}, NFE {nfe}: FID {fid:.2f} ({seconds:.0f} s)", flush=True)


def best(rows: list[dict], side: str, nfe: int) -> dict | None:
    have = [r for r in rows if r["side"] == side and str(nfe) in r["fid"]]
    return min(have, key=lambda r: r["fid"][str(nfe)], default=None)


def summary(rows: list[dict], nfes: list[int]) -> tuple[list[str], list[dict]]:
    """The table's lines (a row per (side, sampler, spacing), a column per NFE) and, per NFE,
    our best against diffusers' best."""
    lines = [
        f"{'side':<10}{'sampler':<24}{'spacing':<10}" + "".join(f"{f'NFE {k}':>10}" for k in nfes)
    ]
    for r in rows:
        cells = "".join(
            f"{r['fid'][str(k)]:>10.2f}" if str(k) in r["fid"] else f"{'-':>10}" for k in nfes
        )
        lines.append(f"{r['side']:<10}{r['sampler']:<24}{r['spacing']:<10}{cells}")
    bests = []
    for k in nfes:
        ours, peer = best(rows, "ours", k), best(rows, "diffusers", k)
        if ours is None or peer is None:
            continue
        a, b = ours["fid"][str(k)], peer["fid"][str(k)]
        bests.append({"nfe": k, "ours": a, "ours_case": f"{ours['sampler']} {ours['spacing']}",
                      "diffusers": b, "diffusers_case": f"{peer['sampler']} {peer['spacing']}",
                      "ratio": a / b})  # fmt: skip
        lines.append(
            f"NFE {k}: ours best {a:.2f} ({bests[-1]['ours_case']}) vs diffusers best {b:.2f} "
            f"({bests[-1]['diffusers_case']}): ratio {a / b:.3f}"
        )
    return lines, bests


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="a diffusers DDPMPipeline folder")
    p.add_argument("--stats", required=True, help="reference statistics (.npz)")
    p.add_argument("--inception", default=None, help="TorchScript Inception network")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--nfe", default="5,10,20", help="comma-separated network evaluations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--json", type=Path, default=Path("few-step-peers.json"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="both networks under bf16 autocast (CUDA)")
    p.add_argument("--ours", default=",".join(OURS), help="our samplers (default: all)")
    p.add_argument("--our-spacings", default="default,tuned",
                   help="our grids: default (each sampler's), tuned, or any of "
                   f"{', '.join(GRIDS)}")  # fmt: skip
    p.add_argument("--peer-spacings", default="linspace,trailing,karras",
                   help="diffusers' timestep spacings tried (default: all)")  # fmt: skip
    p.add_argument("--no-clip", action="store_true", help="ours without clipping x̂_0")
    args = p.parse_args(argv)
    args.ours = [s for s in args.ours.split(",") if s]
    args.peer_spacings = [s for s in args.peer_spacings.split(",") if s]
    args.our_spacings = [s for s in args.our_spacings.split(",") if s]
    unknown = sorted(set(args.ours) - set(OURS))
    if unknown:
        p.error(f"--ours: unknown sampler {unknown[0]} (choose from {', '.join(OURS)})")
    unknown = sorted(set(args.our_spacings) - {"default", "tuned", *GRIDS})
    if unknown:
        p.error(f"--our-spacings: unknown grid {unknown[0]} (default, tuned, {', '.join(GRIDS)})")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    diffusers = diffusers_or_none()
    if diffusers is None:
        sys.exit("few_step_peers.py needs diffusers (pip install diffusers)")
    device = torch.device(args.device)
    args.bf16 = args.bf16 and device.type == "cuda"
    nfes = sorted({int(k) for k in args.nfe.split(",") if k.strip()})
    ref = load_stats(args.stats)
    net = load_inception(args.inception, device)
    loaded = dataclasses.replace(load_model(args.model, device), bf16=args.bf16)
    result = {
        "model": str(args.model),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "n": args.n,
        "seed": args.seed,
        "nfe": nfes,
        "bf16": args.bf16,
        "rows": [],
    }
    rows: list[dict] = []

    def save() -> None:  # after every cell, so a long run that stops keeps what it measured
        result["rows"] = rows
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))

    run_ours(loaded, net, ref, args, nfes, rows, save)
    run_peers(diffusers, args.model, device, net, ref, args, nfes, loaded.shape, rows, save)
    lines, result["best"] = summary(rows, nfes)
    save()
    print("\n".join(lines))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    run_script(main)
