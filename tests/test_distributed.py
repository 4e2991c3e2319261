"""Several processes with torchrun (issue 13), on the CPU with gloo.

The multi-process tests start the real command, `python -m torch.distributed.run
--nproc-per-node 2 -m ddpm train ...`, on a folder of tiny images, and compare with the
one-process run of the same flags in this process: same losses, same weights. The helpers are
tested here, in one process, as properties.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.cli import main
from ddpm.data.images import StreamingDataset
from ddpm.data.stream import batches
from ddpm.diffusion.schedule import make_schedule
from ddpm.diffusion.timesteps import make_timestep_sampler
from ddpm.errors import ConfigError
from ddpm.io import checkpoint as C
from ddpm.train import TrainConfig
from ddpm.train import distributed as D
from ddpm.train.step import draw_noise

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(autouse=True)
def _one_thread():
    """One CPU thread here, as torchrun gives each worker (OMP_NUM_THREADS=1): the one-process
    runs in this process share the 2 cores with the workers without oversubscribing them."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- the helpers, in one process ---------------------------------------------------------------


@pytest.mark.parametrize("n, world", [(7, 2), (8, 4), (3, 4), (100, 3)])
def test_shards_partition_the_indices_in_order(n, world):
    parts = [D.Dist(rank=r, world_size=world).shard(n) for r in range(world)]
    assert [i for p in parts for i in p] == list(range(n))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_rows_of_all_processes_make_the_global_batch(blobs):
    B, W = 12, 3
    rows = [D.Dist(rank=r, world_size=W).rows(B) for r in range(W)]
    whole = next(batches(blobs, B, seed=5, start_step=3, hflip=True))[0]
    parts = [next(batches(blobs, B, seed=5, start_step=3, hflip=True, rows=r))[0] for r in rows]
    assert torch.equal(torch.cat(parts), whole)
    assert D.Dist().rows(B) is None  # one process: the whole batch


def test_streamed_rows_are_the_rows_of_the_cached_batch(blobs):
    class Streamed(StreamingDataset):  # decodes from the in-memory images, no files
        def __init__(self, images):
            self.images, self.labels, self.strict = images, None, False
            self.source, self.class_names, self.entries = "blobs", None, []

        def __len__(self):
            return self.images.shape[0]

        def __getitem__(self, i):
            return self.images[i], True

    rows = D.Dist(rank=1, world_size=2).rows(8)
    want = next(batches(blobs, 8, seed=2, start_step=4, hflip=True))[0][rows]
    got = next(batches(Streamed(blobs.images), 8, 2, 4, hflip=True, workers=0, rows=rows))[0]
    assert torch.equal(got, want)


@pytest.mark.parametrize("sampler", [None, "lognormal"])
def test_noise_of_a_slice_is_the_slice_of_the_global_noise(sampler):
    schedule = make_schedule("linear", 1000)
    timesteps = make_timestep_sampler(sampler, schedule) if sampler else None
    whole = SimpleNamespace(
        noise_gen=torch.Generator().manual_seed(3), timesteps=timesteps, teacher=None
    )
    part = SimpleNamespace(
        noise_gen=torch.Generator().manual_seed(3), timesteps=timesteps, teacher=None
    )
    x_0 = torch.zeros(8, 1, 4, 4)
    t, eps, _ = draw_noise(whole, schedule, x_0)
    t_r, eps_r, _ = draw_noise(part, schedule, x_0[4:], 8, slice(4, 8))
    assert torch.equal(t_r, t[4:]) and torch.equal(eps_r, eps[4:])
    assert torch.equal(whole.noise_gen.get_state(), part.noise_gen.get_state())  # same draws


def test_condition_dropout_of_a_slice_is_the_slice_of_the_global_dropout():
    from ddpm.sampling.guidance import drop_labels

    y = torch.arange(16) % 10
    whole = drop_labels(y, 0.5, 10, torch.Generator().manual_seed(1))
    part = drop_labels(y[8:], 0.5, 10, torch.Generator().manual_seed(1), 16, slice(8, 16))
    assert torch.equal(part, whole[8:]) and (whole == 10).any()


def test_bad_environments_and_flag_combinations_fail_before_joining(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ConfigError, match="RANK"):
        D.init("cpu")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match="batch_size 7 must be divisible"):
        D.init("cpu", batch_size=7)
    with pytest.raises(ConfigError, match="names one GPU"):
        D.process_device("cuda:1", 1, 2)
    with pytest.raises(ConfigError, match="--ddp-bucket-mb"):
        TrainConfig(ddp_bucket_mb=0)


def test_cli_names_the_batch_size_under_torchrun(monkeypatch, capsys):
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    assert main(["train", "--batch-size", "7", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "ddpm train [rank 1]: error: batch_size 7 must be divisible by the number of "
        "processes (2): --batch-size is the global batch, split evenly"
    ]


def test_one_process_needs_no_process_group():
    dist = D.init("cpu")
    assert dist.world_size == 1 and dist.is_main and not torch.distributed.is_initialized()
    x = torch.arange(3.0)
    assert dist.gather_rows(x) is x and dist.on_main(lambda: 5) == 5
    votes = D.Votes(dist)
    assert votes(True, False) == (True, False)  # at once, as before


# --- several processes --------------------------------------------------------------------------


def image_folder(root: Path, n: int = 32) -> Path:
    """n gray 8x8 pictures of a bright square at one of four places."""
    root.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        img = np.zeros((8, 8), np.uint8)
        r, c = divmod(int(torch.randint(0, 4, (1,), generator=g)), 2)
        img[r * 4 : r * 4 + 4, c * 4 : c * 4 + 4] = 255
        Image.fromarray(img).save(root / f"{i:02d}.png")
    return root


def flags(data: Path, out: Path, steps: int, **extra) -> list[str]:
    """A tiny U-Net on 8x8 images; random flips on (drawn per global batch)."""
    opts = {
        "data": data,
        "channels": 1,
        "image-size": 8,
        "preset": "small",
        "base-channels": 16,
        "channel-mults": "1,2",
        "attention-levels": 1,
        "T": 50,
        "batch-size": 8,
        "lr": 2e-3,
        "warmup": 3,
        "log-every": 2,
        "sample-every": 1000,
        "checkpoint-every": 1000,
        "num-samples": 4,
        "steps": steps,
        "out": out,
        **extra,
    }
    argv = ["train", "--quiet"]
    for k, v in opts.items():
        argv += [f"--{k}", str(v)]
    return argv


def torchrun(argv: list[str], nproc: int = 2, script: Path | None = None, **env):
    """`python -m torch.distributed.run --standalone --nproc-per-node N -m ddpm ...`."""
    target = [str(script)] if script is not None else ["-m", "ddpm"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc-per-node", str(nproc), *target, *argv]
    path = os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def worker_pids(proc: subprocess.Popen, nproc: int = 2, timeout: float = 60) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes (its children), read from /proc."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = {}
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                try:
                    env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                ranks = [e[5:] for e in env if e.startswith(b"RANK=")]
                if ranks:
                    found[int(ranks[0])] = int(pid)
        if len(found) == nproc:
            return found
        time.sleep(0.1)
    raise AssertionError("torchrun's workers did not start")


def wait_for(condition, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"torchrun ended early:\n{proc.communicate()[1][-3000:]}")
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def logged_steps(run: Path) -> list[int]:
    try:
        with (run / "log.csv").open() as f:
            return [int(r["step"]) for r in csv.DictReader(f)]
    except (OSError, ValueError, KeyError):
        return []


def log_losses(run: Path) -> dict[int, float]:
    with (run / "log.csv").open() as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}


def assert_same_weights(a: Path, b: Path) -> None:
    """Equal to float tolerance. The gradients differ in the last bits (summed in another
    order), which Adam can turn into a small fraction of a step of lr = 2e-3 where a gradient
    is near 0: 1e-4 is 5% of one step (measured: 3e-5 after 12 steps)."""
    ca, cb = C.load_checkpoint(a), C.load_checkpoint(b)
    assert ca["step"] == cb["step"]
    for key in ("model", "ema"):
        for name, value in ca[key].items():
            torch.testing.assert_close(cb[key][name], value, rtol=1e-4, atol=1e-4, msg=name)


# Records every file a process writes or renames under AUDIT_ROOT, then runs `ddpm`.
AUDITED = textwrap.dedent(
    """
    import atexit, json, os, sys
    root, written, on = os.environ["AUDIT_ROOT"], set(), [True]

    def hook(event, args):
        if not on[0]:
            return
        if event == "open" and not isinstance(args[0], int):
            mode, flags = args[1], args[2] or 0
            if isinstance(mode, str):
                writes = any(c in mode for c in "wax+")
            else:
                writes = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            paths = [args[0]] if writes else []
        elif event in ("os.rename", "os.remove", "os.mkdir", "tempfile.mkstemp"):
            paths = [args[0]] + ([args[1]] if event == "os.rename" else [])
        else:
            paths = []
        for p in paths:
            p = os.fsdecode(os.fspath(p))
            if os.path.abspath(p).startswith(root):
                written.add(os.path.relpath(p, root))

    def dump():
        on[0] = False
        with open(os.environ["AUDIT_OUT"] + "." + os.environ["RANK"], "w") as f:
            json.dump(sorted(written), f)

    sys.addaudithook(hook)
    atexit.register(dump)
    from ddpm.cli import main
    sys.exit(main())
    """
)


@pytest.mark.slow  # 12 s at 2 processes, 13 at 4: CI runs both with the slow tests
@pytest.mark.subprocess
@pytest.mark.parametrize("nproc", [2, 4])
def test_several_processes_reproduce_one_process_and_only_rank_0_writes(tmp_path, nproc):
    data = image_folder(tmp_path / "data")
    one, two = tmp_path / "one", tmp_path / "two"
    script = tmp_path / "audited.py"
    script.write_text(AUDITED)
    audit = tmp_path / "audit"
    two.mkdir()  # already there: the other ranks must not even look whether they can write
    env = {"AUDIT_ROOT": str(two), "AUDIT_OUT": str(audit)}
    proc = torchrun(flags(data, two, 12), nproc, script=script, **env)
    assert main(flags(data, one, 12)) == 0  # meanwhile, the one-process run here
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert f"rank 0 of {nproc} processes, {8 // nproc} images each" in out

    assert_same_weights(one / "ckpt-0000012.pt", two / "ckpt-0000012.pt")
    a, b = log_losses(one), log_losses(two)
    assert list(a) == list(b) == [2, 4, 6, 8, 10, 12]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4), step
    # rank 0 wrote the run (the same files as one process), the others nothing at all
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    rank0, *others = (json.loads(Path(f"{audit}.{r}").read_text()) for r in range(nproc))
    assert others == [[]] * (nproc - 1)
    assert {"log.csv", "loss.png", "process.gif"} <= set(rank0)


@pytest.mark.slow  # 10 s: CI runs it with the slow tests
@pytest.mark.subprocess
def test_importance_sampled_t_stays_the_same_at_two_processes(tmp_path):
    """L_vlb with importance-sampled t (Nichol & Dhariwal §3.3): the loss history that picks t
    is the whole global batch's on every process, so the runs still agree once it takes over
    from uniform sampling (10 values for each of T = 10 steps: after some 20 steps of 8)."""
    data = image_folder(tmp_path / "data")
    one, two = tmp_path / "one", tmp_path / "two"
    extra = {"loss": "vlb", "T": 10, "log-every": 4, "checkpoint-every": 48}
    proc = torchrun(flags(data, two, 48, **extra))
    assert main(flags(data, one, 48, **extra)) == 0
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    a, b = log_losses(one), log_losses(two)
    assert list(a) == list(b) == list(range(4, 49, 4))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-4), step
    assert_same_weights(one / "ckpt-0000048.pt", two / "ckpt-0000048.pt")


@pytest.mark.slow  # 14 s: CI runs it with the slow tests
@pytest.mark.subprocess
def test_sigterm_to_one_process_saves_once_and_resume_works_at_any_world_size(tmp_path):
    data = image_folder(tmp_path / "data")
    run, ref = tmp_path / "run", tmp_path / "ref"
    assert main(flags(data, run, 4)) == 0  # one process writes ckpt-0000004.pt
    proc = torchrun(flags(data, run, 100_000, resume="auto"))  # two processes go on from it
    pids = worker_pids(proc)
    wait_for(lambda: any(s > 6 for s in logged_steps(run)), proc)
    os.kill(pids[1], signal.SIGTERM)  # to rank 1 alone
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0  # torchrun reports the workers' exit code 130
    assert out.count("stopped at step") == 1, out + err
    stop = int(out.split("stopped at step ")[1].split(";")[0])
    names = [p.name for p in C.list_checkpoints(run)]
    assert names == ["ckpt-0000004.pt", f"ckpt-{stop:07d}.pt"]  # one save, at the stop
    assert not list(run.glob(".*.tmp"))
    # one process finishes the run; it equals a run that never stopped or changed size
    assert main(flags(data, run, stop + 4, resume="auto")) == 0
    assert main(flags(data, ref, stop + 4)) == 0
    assert_same_weights(ref / f"ckpt-{stop + 4:07d}.pt", run / f"ckpt-{stop + 4:07d}.pt")


@pytest.mark.slow  # 12 s: CI runs it with the slow tests
@pytest.mark.subprocess
def test_a_killed_process_ends_the_job_and_resume_loses_nothing(tmp_path):
    data = image_folder(tmp_path / "data")
    run, ref = tmp_path / "run", tmp_path / "ref"
    proc = torchrun(flags(data, run, 100_000, **{"checkpoint-every": 4}))
    pids = worker_pids(proc)
    wait_for(lambda: bool(C.list_checkpoints(run)), proc)
    os.kill(pids[1], signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    last = C.list_checkpoints(run)[-1]
    step = C.load_checkpoint(last)["step"]
    assert step % 4 == 0 and last.name == f"ckpt-{step:07d}.pt"
    assert main(flags(data, run, step + 4, resume="auto")) == 0
    assert main(flags(data, ref, step + 4)) == 0
    assert_same_weights(ref / f"ckpt-{step + 4:07d}.pt", run / f"ckpt-{step + 4:07d}.pt")


def recipe_flags(data: Path, out: Path, steps: int, *extra: str) -> list[str]:
    """--recipe cifar10-8min on a tiny U-Net and 8x8 images, its batch, learning rate, warm-up
    and EMA left to the recipe; a constant learning rate after the warm-up, so that a run does
    not depend on the clock (the recipe's decays to zero at 8 minutes)."""
    argv = ["train", "--quiet", "--recipe", "cifar10-8min", "--data", str(data), "--out", str(out)]
    argv += ["--channels", "1", "--image-size", "8", "--preset", "small", "--T", "50"]
    argv += ["--base-channels", "8", "--channel-mults", "1,2", "--attention-levels", "1"]
    argv += ["--no-compile", "--lr-decay", "constant", "--steps", str(steps), *extra]
    return argv


@pytest.mark.slow  # 14 s: CI runs it with the slow tests
@pytest.mark.subprocess
def test_the_recipe_killed_at_four_processes_finishes_in_one_as_if_never_stopped(tmp_path):
    """The fault drill: SIGKILL to one rank mid-run stops the job; --resume at another number
    of processes keeps the run's global batch (128 a process at the start: 512) and its
    learning rate, and loses only the steps since the last checkpoint: it ends as a run of one
    process at that batch that never stopped."""
    data = image_folder(tmp_path / "data", 512)
    run, ref = tmp_path / "run", tmp_path / "ref"
    every = ["--checkpoint-every", "2", "--no-final-pictures"]
    proc = torchrun(recipe_flags(data, run, 100_000, *every), 4)
    pids = worker_pids(proc, 4)
    wait_for(lambda: bool(C.list_checkpoints(run)), proc)
    os.kill(pids[2], signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    step = C.load_checkpoint(C.list_checkpoints(run)[-1])["step"]
    assert main(recipe_flags(data, run, step + 2, *every, "--resume")) == 0
    ckpt = C.load_checkpoint(run / f"ckpt-{step + 2:07d}.pt")
    assert ckpt["train_config"]["batch_size"] == 512
    assert ckpt["train_config"]["lr"] == pytest.approx(8e-4)  # 4e-4 x sqrt(4)
    assert main(recipe_flags(data, ref, step + 2, *every, "--batch-size", "512")) == 0
    assert_same_weights(ref / f"ckpt-{step + 2:07d}.pt", run / f"ckpt-{step + 2:07d}.pt")


# FID statistics of a tiny model's samples, split over the processes of a gloo group.
FID_WORKER = textwrap.dedent(
    """
    import sys, numpy as np, torch
    sys.path.insert(0, sys.argv[2])
    from test_distributed import fid_stats
    from ddpm.train import distributed
    dist = distributed.init("cpu")
    stats = fid_stats(dist)
    if dist.is_main:
        np.savez(sys.argv[1], mu=stats.mu, sigma=stats.sigma, n=stats.n)
    distributed.shutdown()
    """
)


def fid_stats(dist=None):
    """FIDStats of 7 samples (batches of 3) of a fixed tiny U-Net through a fixed projection."""
    from ddpm.diffusion.schedule import make_schedule
    from ddpm.eval import evaluate
    from ddpm.eval.evaluate import model_stats
    from ddpm.models.presets import build_model
    from ddpm.sampling.loaded import Loaded
    from ddpm.sampling.spec import SamplingSpec
    from test_evaluate import FakeInception

    torch.manual_seed(0)
    model = build_model("unet", {"in_channels": 3, **TINY}).eval()
    loaded = Loaded(model, make_schedule("linear", 20), "eps", (3, 8, 8), 0)
    evaluate.FEATURE_DIM = 16
    settings = SamplingSpec("ddim", 4, batch_size=3, seed=11)
    return model_stats(loaded, FakeInception(), 7, settings, dist=dist)


TINY = dict(
    base_channels=16, channel_mults=(1, 2), attention_levels=(1,), num_res_blocks=1, norm_groups=8
)


@pytest.mark.subprocess
def test_fid_sampling_split_over_processes_gives_the_same_statistics(tmp_path, monkeypatch):
    from ddpm.eval import evaluate

    monkeypatch.setattr(evaluate, "FEATURE_DIM", 16)
    worker = tmp_path / "fid_worker.py"
    worker.write_text(FID_WORKER)
    result = tmp_path / "stats.npz"
    proc = torchrun([str(result), str(Path(__file__).parent)], script=worker)
    one = fid_stats()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    two = np.load(result)
    assert int(two["n"]) == one.n == 7
    np.testing.assert_allclose(two["mu"], one.mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two["sigma"], one.sigma, rtol=1e-4, atol=1e-6)
