"""The peer's recipe for the quality-per-minute curve: diffusers' own training of its DDPM
CIFAR-10 `UNet2DModel`, given every speed feature we use, for a wall-clock budget, with
snapshots of its EMA weights at given minutes (as DDPMPipeline folders that `ddpm eval
--checkpoint DIR` scores with our FID code, so both curves come from the same measurement).

Its recipe is diffusers' examples/unconditional_image_generation/train_unconditional.py:
`DDPMScheduler` (linear betas, 1000 steps, epsilon prediction), MSE loss, AdamW (lr 2e-4,
betas 0.95/0.999, weight decay 1e-6), 500 warm-up steps then cosine decay, gradient clipping at
1, `EMAModel` (decay up to 0.9999, warm-up power 3/4), random flips, batch 128; the network is
google/ddpm-cifar10-32's configuration (35,746,307 parameters, dropout 0.1). Speed features, as
ours: bf16 autocast, channels-last, `compile(mode="reduce-overhead")` (CUDA graphs), fused
AdamW, a foreach EMA, and the training images decoded once into GPU memory (our loader).
With `--step-graph` (as our `--step-graph`) the whole step is one CUDA graph instead: noise,
forward, loss, backward, clipping, AdamW and the EMA update, replayed once a step, with the
learning rate and the EMA's decay (diffusers' own schedules, computed on the host) filled
into the graph before each replay.

    python benchmarks/peer_quality.py --data cifar10:cifar10/train.zip --step-graph \
        --minutes 8 --snapshot-minutes 1,2,4,8 --out runs/peer

Expected on one H100 (torch 2.11, diffusers 0.42.1, 2026-11-27): about 11,300 steps at 4,040
img/s; its snapshots, scored by `fid_sweep.py` (`--case runs/peer/snapshot-8min:ema:ddim:50`),
give FID-10k 500.7 (still compiling), 30.39 and 18.93 at 2, 4 and 8 minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PEER_CONFIGS, diffusers_or_none, run_script

from ddpm.data.images import load_dataset
from ddpm.data.stream import batches


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="any ddpm --data form, e.g. cifar10:train.zip")
    p.add_argument("--minutes", type=float, default=8.0, help="training wall-clock budget")
    p.add_argument("--snapshot-minutes", default="1,2,4,8")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument(
        "--cosine-steps",
        type=int,
        default=10_580,
        help="length of the cosine decay (diffusers needs a step count; 10,580 is what this "
        "recipe reached in 8 minutes on an H100 on 2026-11-27)",
    )
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--step-graph", action="store_true", help="the whole step as one CUDA graph")
    args = p.parse_args()

    diffusers = diffusers_or_none()
    if diffusers is None:
        sys.exit("peer_quality.py needs diffusers (pip install diffusers)")
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    data = load_dataset(args.data, (32, 32), 3)  # decoded before CUDA work starts
    config = {**PEER_CONFIGS["ddpm-cifar10"], "dropout": args.dropout}
    unet = diffusers.UNet2DModel(in_channels=3, out_channels=3, **config).to(device)
    shadow = diffusers.UNet2DModel(in_channels=3, out_channels=3, **config)  # on the CPU
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    alphas_cumprod = scheduler.alphas_cumprod.to(device)
    fast = device.type == "cuda"
    if fast:
        unet = unet.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(
        unet.parameters(),
        lr=args.lr,
        betas=(0.95, 0.999),
        weight_decay=1e-6,
        eps=1e-8,
        fused=fast,
    )
    lr_sched = get_cosine_schedule_with_warmup(opt, args.warmup, args.cosine_steps)
    ema = EMAModel(
        unet.parameters(),
        decay=0.9999,
        use_ema_warmup=True,
        inv_gamma=1.0,
        power=3 / 4,
        foreach=True,
    )
    graph = fast and args.step_graph
    if fast and not args.no_compile:  # inside a step graph, the model replays no graphs itself
        unet.compile(mode="default" if graph else "reduce-overhead", dynamic=False)

    stream = batches(data, args.batch_size, args.seed, 0, device, hflip=True)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    marks = sorted(float(m) for m in args.snapshot_minutes.split(",") if m.strip())
    args.out.mkdir(parents=True, exist_ok=True)
    threads: list[threading.Thread] = []
    log: list[dict] = []
    snapshots: list[dict] = []

    def snapshot(minutes: float, step: int, elapsed: float) -> None:
        ema.copy_to(shadow.parameters())  # device -> host copy here; the write in a thread
        folder = args.out / f"snapshot-{minutes:g}min"
        pipe = diffusers.DDPMPipeline(unet=shadow, scheduler=scheduler)
        t = threading.Thread(target=pipe.save_pretrained, args=(folder,))
        t.start()
        threads.append(t)
        snapshots.append(
            {"minutes": minutes, "elapsed_s": elapsed, "step": step, "dir": str(folder)}
        )
        print(f"snapshot {folder} at step {step} ({elapsed / 60:.2f} min)", flush=True)

    unet.train()
    step, loss_sum, t0 = 0, torch.zeros((), device=device), time.perf_counter()
    t_win, s_win = t0, 0
    step_fn = GraphedStep(unet, opt, ema, alphas_cumprod, gen, fast) if graph else None
    while True:
        x_0, _ = next(stream)
        if step_fn is not None:
            loss = step_fn(x_0, lr_sched)
        else:
            loss = peer_step(unet, opt, alphas_cumprod, gen, x_0, fast)
            lr_sched.step()
            ema.step(unet.parameters())
        loss_sum += loss.detach()
        step += 1
        now = time.perf_counter()
        elapsed = now - t0
        if step % 250 == 0:
            mean = float(loss_sum) / (step - s_win)
            img_s = (step - s_win) * args.batch_size / (time.perf_counter() - t_win)
            log.append({"step": step, "loss": mean, "img_per_s": img_s, "elapsed_s": elapsed})
            print(f"step {step} loss {mean:.4f} {img_s:.0f} img/s {elapsed:.0f} s", flush=True)
            loss_sum.zero_()
            t_win, s_win = time.perf_counter(), step
        while marks and elapsed >= 60 * marks[0]:
            snapshot(marks.pop(0), step, elapsed)
        if elapsed >= 60 * args.minutes:
            break
    for t in threads:
        t.join()
    summary = {
        "steps": step,
        "seconds": elapsed,
        "img_per_s_mean": step * args.batch_size / elapsed,
        "snapshots": snapshots,
        "log": log,
        "args": {k: str(v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("steps", "seconds", "img_per_s_mean")}))


def peer_step(unet, opt, alphas_cumprod, gen, x_0, fast: bool) -> torch.Tensor:
    """diffusers' training step, up to the optimiser's step (its scheduler and EMA follow)."""
    noise = torch.randn(x_0.shape, device=x_0.device, generator=gen)
    t = torch.randint(0, 1000, (x_0.shape[0],), device=x_0.device, generator=gen)
    a = alphas_cumprod[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x_0 + (1 - a).sqrt() * noise  # DDPMScheduler.add_noise
    if fast:
        x_t = x_t.contiguous(memory_format=torch.channels_last)
        torch.compiler.cudagraph_mark_step_begin()
    with torch.autocast(x_0.device.type, dtype=torch.bfloat16, enabled=fast, cache_enabled=False):
        pred = unet(x_t, t, return_dict=False)[0]
    loss = F.mse_loss(pred.float(), noise.float())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0, foreach=True)
    opt.step()
    return loss.detach()


class GraphedStep:
    """`peer_step` and diffusers' EMA update captured as one CUDA graph (as our StepGraph):
    three eager warm-up steps on a side stream, then capture; each call fills the batch, the
    learning rate of diffusers' scheduler and 1 - the decay of its EMAModel, then replays.
    With `capture=False` every call runs the same step on the same tensors eagerly (how the
    CPU test checks it against diffusers' own step)."""

    def __init__(self, unet, opt, ema, alphas_cumprod, gen, fast: bool, warmup=3, capture=True):
        self.unet, self.opt, self.ema = unet, opt, ema
        self.a, self.gen, self.fast = alphas_cumprod, gen, fast
        self.warmup, self.capture, self.calls = warmup, capture, 0
        device = alphas_cumprod.device
        self.lr = torch.tensor(opt.param_groups[0]["lr"], device=device)
        self.w = torch.zeros((), device=device)  # 1 - the EMA's decay
        for group in opt.param_groups:
            group["lr"] = self.lr
        self.params = [p for p in unet.parameters() if p.requires_grad]
        self.graph: torch.cuda.CUDAGraph | None = None
        self.x: torch.Tensor | None = None
        self.out: torch.Tensor | None = None

    def _step(self) -> torch.Tensor:
        loss = peer_step(self.unet, self.opt, self.a, self.gen, self.x, self.fast)
        with torch.no_grad():  # EMAModel.step's foreach update, with its 1 - decay a tensor
            shadow = self.ema.shadow_params
            torch._foreach_sub_(
                shadow, torch._foreach_mul(torch._foreach_sub(shadow, self.params), self.w)
            )
        return loss

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.gen)
        for group in self.opt.param_groups:  # AdamW refuses capture without it
            group["capturable"] = True
        with torch.cuda.graph(graph):  # captures without running: each replay is a step
            self.out = self._step()
        self.graph = graph

    def __call__(self, x_0: torch.Tensor, lr_sched) -> torch.Tensor:
        self.calls += 1
        if self.x is None:
            self.x = x_0.clone()
        self.x.copy_(x_0)
        self.lr.fill_(lr_sched.get_last_lr()[0])
        self.ema.optimization_step += 1  # as EMAModel.step counts
        self.w.fill_(1 - self.ema.get_decay(self.ema.optimization_step))
        if self.capture and self.graph is None and self.calls > self.warmup:
            self._capture()
        if self.graph is not None:
            self.graph.replay()
            loss = self.out
        elif not self.capture:
            loss = self._step()
        else:  # the warm-up: eager, on a side stream (compiles, settles cuDNN and the allocator)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                loss = self._step()
            torch.cuda.current_stream().wait_stream(side)
        lr_sched.step()  # the next step's rate
        for group in self.opt.param_groups:
            group["lr"] = self.lr  # LambdaLR may write a float; the graph reads this tensor
        return loss


if __name__ == "__main__":
    run_script(main)
