"""FID and class accuracy of a class-conditional CIFAR-10 model against the guidance weight w.

    PYTHONPATH=src python3 benchmarks/guidance_sweep.py --checkpoint RUN/ckpt-0012500.pt \\
        --train-zip train.zip --test-zip test.zip --fid-stats cifar10-train-inception-stats.npz \\
        --inception fid-inception-fp16.pt [--n 10000] [--ws 0,0.5,1,2,4] [--device cuda]

For each w (classifier-free guidance, Ho & Salimans 2022: eps = eps_c + w (eps_c - eps_u);
w = 0 is the plain conditional model), draws n samples with DDIM (--steps 50; with w > 0
each step is one forward pass of 2B), image i of class drawn uniformly from (--seed, i),
the same classes and starting noise for every w, and reports
  - FID against the reference statistics (our FID code, ddpm.eval.evaluate / ddpm.eval.fid);
  - class accuracy: the share of samples that a CIFAR-10 classifier assigns to the class
    asked for. The classifier is a small ResNet (the ResNet-9 of Page's DAWNBench entry)
    trained here on the real train zip for --classifier-epochs (about 10-30 s on an H100);
    its accuracy on the test zip is printed, so the column can be read against it.
Expected shape: accuracy rises with w; FID has its minimum at a small w. `--null-row` adds
the network's unconditional branch (the null class) as a row. Prints a markdown table (and
`--json` writes the numbers). Run from the repository root; needs no installation.

Expected for the class-conditional 8-minute model of docs/benchmarks.md (one H100, torch 2.11,
2026-11-27): FID-10k 12.68 / 10.14 / 10.94 / 17.35 / 33.30 and class accuracy 73.5% / 89.8% /
95.7% / 98.8% / 99.8% at w = 0 / 0.5 / 1 / 2 / 4, the classifier 89.19% on the test images;
`--replot docs/results/cifar10-guidance.json --plot docs/cifar10-guidance.png
--unconditional-fid 14.90` redraws docs/cifar10-guidance.png from those numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from common import run_script

from ddpm.data.images import ImageDataset, load_dataset, to_uint8
from ddpm.eval.evaluate import load_inception, load_stats
from ddpm.eval.fid import FIDStats, StatsAccumulator, features, fid_from_stats
from ddpm.sampling.generate import generate
from ddpm.sampling.loaded import Loaded, load_model, speed_up
from ddpm.sampling.samplers import SAMPLERS
from ddpm.sampling.spec import SamplingSpec

# --- the classifier: ResNet-9 (Page 2018, "How to train your ResNet") ---------------------------

MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


def conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(c, c), conv_bn(c, c))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    """uint8 images (B, 3, 32, 32) -> logits (B, classes); width 64 is Page's 6.5M network."""

    def __init__(self, classes: int, width: int = 64):
        super().__init__()
        w = width
        self.net = nn.Sequential(
            conv_bn(3, w),
            conv_bn(w, 2 * w, pool=True),
            Residual(2 * w),
            conv_bn(2 * w, 4 * w, pool=True),
            conv_bn(4 * w, 8 * w, pool=True),
            Residual(8 * w),
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
            nn.Linear(8 * w, classes, bias=False),
        )

    def forward(self, x_u8: Tensor) -> Tensor:
        x = (x_u8.float() / 255 - MEAN.to(x_u8.device)) / STD.to(x_u8.device)
        return self.net(x.contiguous(memory_format=torch.channels_last)) * 0.125


def augment(x: Tensor, g: torch.Generator) -> Tensor:
    """Random crops of the 4-pixel reflection-padded images and random flips (B, C, H, W)."""
    B, C, H, W = x.shape
    padded = F.pad(x.float(), (4, 4, 4, 4), mode="reflect")
    dy = torch.randint(0, 9, (B,), generator=g, device=g.device).to(x.device)
    dx = torch.randint(0, 9, (B,), generator=g, device=g.device).to(x.device)
    rows = (dy[:, None] + torch.arange(H, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(W, device=x.device))[:, None, None, :]
    b = torch.arange(B, device=x.device)[:, None, None, None]
    c = torch.arange(C, device=x.device)[None, :, None, None]
    out = padded[b, c, rows, cols]
    flip = (torch.rand(B, generator=g, device=g.device) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], out.flip(-1), out).to(torch.uint8)


def train_classifier(
    data: ImageDataset, epochs: int, width: int, batch: int, device: torch.device, seed: int
) -> tuple[nn.Module, float]:
    """A ResNet-9 trained on uint8 images with labels, Page's recipe: SGD (Nesterov,
    momentum 0.9, weight decay 5e-4) with the learning rate rising linearly to 0.4 over the
    first fifth of the run and falling linearly to 0, label smoothing 0.2, random crops and
    flips; bf16 autocast on CUDA. Returns (model, seconds)."""
    assert data.labels is not None and data.class_names is not None
    torch.manual_seed(seed)
    model = ResNet9(len(data.class_names), width).to(device, memory_format=torch.channels_last)
    x, y = data.images.to(device), data.labels.to(device)
    steps = epochs * (len(x) // batch)
    opt = torch.optim.SGD(
        model.parameters(), lr=0.4, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=0.4,
        total_steps=max(steps, 1),
        pct_start=0.2,
        anneal_strategy="linear",
        cycle_momentum=False,
    )
    g = torch.Generator(device=device).manual_seed(seed)
    cuda = device.type == "cuda"
    model.train()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g, device=device)
        for k in range(len(x) // batch):
            idx = perm[k * batch : (k + 1) * batch]
            with torch.autocast(device.type, torch.bfloat16, enabled=cuda):
                logits = model(augment(x[idx], g))
                loss = F.cross_entropy(logits.float(), y[idx], label_smoothing=0.2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    sync(device)
    return model.eval(), time.perf_counter() - t0


@torch.no_grad()
def predict(model: nn.Module, images_u8: Tensor, batch: int = 1000) -> Tensor:
    """Predicted classes (N,) of uint8 images, in eval mode (with bf16 autocast on CUDA)."""
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(images_u8), batch):
        x = images_u8[s : s + batch].to(device)
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            out.append(model(x).argmax(1))
    return torch.cat(out)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# --- the sweep ----------------------------------------------------------------------------------


@torch.no_grad()
def sweep_row(
    loaded: Loaded,
    labels: Tensor,
    w: float,
    args: argparse.Namespace,
    reference: FIDStats,
    inception: nn.Module,
    classifier: nn.Module,
    to_classifier: Tensor | None,
) -> dict:
    """FID and class accuracy of n samples of `labels` at guidance w (`to_classifier` maps
    the model's class indices to the classifier's; None for the null-class row)."""
    device = next(inception.parameters()).device
    acc = StatsAccumulator()
    correct = 0

    def on_batch(start: int, x: Tensor) -> None:
        nonlocal correct
        u8 = to_uint8(x)
        acc.update(features(inception, u8, device))
        if to_classifier is not None:
            want = to_classifier[labels[start : start + len(x)]]
            correct += int((predict(classifier, u8).cpu() == want).sum())

    sync(device)
    t0 = time.perf_counter()
    spec = SamplingSpec(args.sampler, args.steps, guidance=w, seed=args.seed)
    spec = spec.replace(clip=True, batch_size=args.batch_size)
    generate(loaded, len(labels), spec, on_batch=on_batch, class_labels=labels)
    sync(device)
    seconds = time.perf_counter() - t0
    return {
        "w": w,
        "fid": fid_from_stats(acc.stats(), reference),
        "accuracy": correct / len(labels) if to_classifier is not None else None,
        "seconds": seconds,
    }


def load_labelled(path: str) -> ImageDataset:
    data = load_dataset(path, stream=False)
    assert isinstance(data, ImageDataset)
    if data.labels is None or data.class_names is None:
        sys.exit(f"{path}: no class labels (expected one sub-folder per class)")
    return data


def plot_record(record: dict, png: Path, unconditional: float | None = None) -> None:
    """FID and class accuracy against w, from a sweep's record (the --json contents); the null
    class, the classifier's own test accuracy and an unconditional model's FID as dashed
    levels."""
    from ddpm.viz.plots import Panel, Series, plot

    rows = [r for r in record["rows"] if r["w"] is not None]
    ws = [r["w"] for r in rows]
    span = [min(ws), max(ws)]
    fid = Panel("FID-10k against guidance", "guidance w", "FID", logy=True)
    fid.series.append(Series("conditional, guided", ws, [r["fid"] for r in rows]))
    for r in record["rows"]:
        if r["w"] is None:
            fid.series.append(Series("null class", span, [r["fid"]] * 2, dashed=True))
    if unconditional is not None:
        fid.series.append(Series("unconditional model", span, [unconditional] * 2, dashed=True))
    acc = Panel("share of samples of the asked class", "guidance w", "class accuracy (%)")
    acc.series.append(Series("samples", ws, [100 * r["accuracy"] for r in rows]))
    test = 100 * record["classifier"]["test_accuracy"]
    acc.series.append(Series("classifier on real test images", span, [test] * 2, dashed=True))
    plot([fid, acc], png)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", type=Path, help="a --class-cond checkpoint")
    p.add_argument("--train-zip", help="CIFAR-10 train images (class folders)")
    p.add_argument("--test-zip", help="CIFAR-10 test images (class folders)")
    p.add_argument("--fid-stats", type=Path, help="reference statistics .npz")
    p.add_argument("--inception", type=Path, help="Inception TorchScript (.pt)")
    p.add_argument("--n", type=int, default=10000, help="samples per guidance weight")
    p.add_argument("--ws", default="0,0.5,1,2,4", help="guidance weights, comma-separated")
    p.add_argument("--null-row", action="store_true", help="add the unconditional branch")
    p.add_argument("--sampler", default="ddim", choices=SAMPLERS)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="torch.compile the model for sampling (default: on CUDA)",
    )
    p.add_argument("--classifier-epochs", type=int, default=10)
    p.add_argument("--classifier-width", type=int, default=64)
    p.add_argument("--classifier-batch", type=int, default=512)
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--plot", type=Path, help="also draw FID and accuracy against w (PNG)")
    p.add_argument("--unconditional-fid", type=float, help="a level to draw beside the FIDs")
    p.add_argument("--replot", type=Path, help="only draw --plot from an earlier --json file")
    args = p.parse_args(argv)
    if args.replot is not None:
        if args.plot is None:
            p.error("--replot needs --plot")
        plot_record(json.loads(args.replot.read_text()), args.plot, args.unconditional_fid)
        return 0
    for flag in ("checkpoint", "train_zip", "test_zip", "fid_stats"):
        if getattr(args, flag) is None:
            p.error(f"--{flag.replace('_', '-')} is required (unless --replot)")
    ws = [float(w) for w in args.ws.split(",") if w.strip()]
    for path in (args.checkpoint, args.fid_stats, args.inception):
        if path is not None and not Path(path).is_file():
            sys.exit(f"{path}: no such file")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)

    loaded = load_model(args.checkpoint, "cpu")
    if loaded.num_classes is None:
        sys.exit(f"{args.checkpoint}: not class-conditional (train with --class-cond)")
    reference = load_stats(args.fid_stats)  # a bad file stops here, not after training

    t0 = time.perf_counter()
    train, test = load_labelled(args.train_zip), load_labelled(args.test_zip)
    decode_s = time.perf_counter() - t0
    missing = [c for c in loaded.names if c not in train.class_names]  # type: ignore[operator]
    if missing or train.class_names != test.class_names:
        sys.exit(f"the checkpoint's classes {loaded.names} are not the zips' {train.class_names}")
    to_classifier = torch.tensor([train.class_names.index(c) for c in loaded.names])  # type: ignore[union-attr]
    classifier, train_s = train_classifier(
        train, args.classifier_epochs, args.classifier_width, args.classifier_batch, device, 0
    )
    assert test.labels is not None
    test_acc = (predict(classifier, test.images).cpu() == test.labels).double().mean().item()

    loaded = dataclasses.replace(
        loaded, model=loaded.model.to(device), schedule=loaded.schedule.to(device)
    )
    compile_ = device.type == "cuda" if args.compile is None else args.compile
    loaded = speed_up(loaded, bf16=True, channels_last=True, compile=compile_)
    inception = load_inception(args.inception, device)
    labels = loaded.draw_classes(args.seed, range(args.n))
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    head = (
        f"guidance sweep: {args.checkpoint} (step {loaded.step}), {args.n} samples per row, "
        f"{args.sampler} {args.steps} steps, classes uniform (seed {args.seed}), bf16 + "
        f"channels-last on CUDA{' + compile' if compile_ else ''}; "
        f"{card}, torch {torch.__version__}, {datetime.date.today()}\n"
        f"classifier: ResNet-9 width {args.classifier_width}, {args.classifier_epochs} epochs "
        f"on {len(train)} train images in {train_s:.1f} s; test accuracy {test_acc:.2%} "
        f"on {len(test)} images (decoding both zips: {decode_s:.1f} s)"
    )
    print(head, flush=True)
    record = {
        "checkpoint": str(args.checkpoint),
        "step": loaded.step,
        "n": args.n,
        "sampler": args.sampler,
        "steps": args.steps,
        "card": card,
        "classifier": {"test_accuracy": test_acc, "train_seconds": train_s},
        "rows": [],
    }
    null = torch.full_like(labels, loaded.num_classes)
    todo = [(w, labels, to_classifier) for w in ws]
    todo += [(None, null, None)] if args.null_row else []
    for w, y, mapping in todo:
        row = sweep_row(loaded, y, w or 0.0, args, reference, inception, classifier, mapping)
        record["rows"].append({**row, "w": w})
        name = "null class" if w is None else f"w={w:g}"
        print(f"{name}: FID {row['fid']:.2f} ({row['seconds']:.0f} s)", flush=True)
        if args.json is not None:  # after every row: a run cut short keeps what it measured
            args.json.write_text(json.dumps(record, indent=2) + "\n")

    print("\n" + head + "\n")
    print("| w | FID | class accuracy | sampling + features (s) |")
    print("|---:|---:|---:|---:|")
    for r in record["rows"]:
        w = "null class" if r["w"] is None else f"{r['w']:g}"
        a = "-" if r["accuracy"] is None else f"{r['accuracy']:.2%}"
        print(f"| {w} | {r['fid']:.2f} | {a} | {r['seconds']:.0f} |")
    if args.plot is not None:
        plot_record(record, args.plot, args.unconditional_fid)
    return 0


if __name__ == "__main__":
    run_script(main)
