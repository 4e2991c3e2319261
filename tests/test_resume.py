"""`ddpm train --resume` continues the run as it was set up (issue "The first hour"): the flags
left out keep the run's values, those that may change (how long, how often, how fast, where)
take the new ones, and a flag that would change what the run trains is refused before anything
is written. A second Ctrl-C while the last checkpoint is being written waits for it."""

import csv
import os
import shutil
import signal

import pytest
import torch

from ddpm.cli import build_parser, main
from ddpm.io import checkpoint as C
from ddpm.train.budget import AGAIN, FIRST
from test_before_layout import BEFORE, images, losses

COMMON = ["--threads", "1", "--quiet", "--no-final-pictures"]  # no settings of the run


def first_run(data, out, steps: int) -> list[str]:
    """A tiny U-Net on 8x8 images, checkpoints every 4 steps (three kept), 10 steps."""
    return [
        "train", "--data", str(data), "--preset", "small", "--image-size", "8",
        "--base-channels", "8", "--channel-mults", "1,2", "--num-res-blocks", "1",
        "--attention-levels", "1", "--T", "50", "--steps", str(steps), "--batch-size", "4",
        "--lr", "2e-3", "--warmup", "2", "--log-every", "1", "--checkpoint-every", "4",
        "--keep-checkpoints", "3", "--sample-every", "1000", "--num-samples", "4",
        "--seed", "3", "--out", str(out), *COMMON,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """(data, run folder) of a 10-step run: ckpt-0000004, -0000008 and -0000010.pt."""
    root = tmp_path_factory.mktemp("resume")
    data, run = images(root / "data"), root / "run"
    assert main(first_run(data, run, 10)) == 0
    return data, run


@pytest.fixture
def stopped(finished, tmp_path):
    """A copy of the finished run as if it had been killed after step 4 (its later checkpoints
    gone): the run's own --steps is 10."""
    data, run = finished
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for step in (8, 10):
        (copy / f"ckpt-{step:07d}.pt").unlink()
    return data, copy


def resume(run, *flags: str) -> int:
    return main(["train", "--out", str(run), "--resume", *flags, *COMMON])


def settings(path) -> dict:
    return C.load_checkpoint(path)["train_config"]


def test_resume_alone_continues_to_the_runs_own_steps_as_if_never_stopped(stopped, finished):
    _, run = stopped
    assert resume(run) == 0  # not the default 600 steps, nor T 1000 nor the preset's channels
    done, never_stopped = run / "ckpt-0000010.pt", finished[1] / "ckpt-0000010.pt"
    assert C.list_checkpoints(run)[-1] == done
    assert {**settings(done), "out": None} == {**settings(never_stopped), "out": None}
    a, b = C.load_checkpoint(done), C.load_checkpoint(never_stopped)
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_a_setting_that_may_change_is_taken(stopped):
    _, run = stopped
    assert resume(run, "--steps", "6", "--checkpoint-every", "100") == 0
    assert C.list_checkpoints(run)[-1].name == "ckpt-0000006.pt"
    saved = settings(run / "ckpt-0000006.pt")
    assert (saved["steps"], saved["checkpoint_every"], saved["T"]) == (6, 100, 50)


def test_a_setting_of_the_run_given_anew_is_refused_in_one_line_before_any_write(stopped, capsys):
    _, run = stopped
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()}
    flags = ["--T", "500", "--steps", "12", "--schedule", "cosine", "--base-channels", "64"]
    assert resume(run, *flags) == 2
    err = capsys.readouterr().err
    assert err == (
        "ddpm train: error: --resume keeps the run's settings; these differ: --schedule cosine "
        "(the run has linear), --T 500 (the run has 50), --base-channels 64 (the run has 8)\n"
    )
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in run.rglob("*") if p.is_file()}
    assert after == before


def test_the_runs_own_values_given_again_are_accepted(stopped):
    data, run = stopped
    assert resume(run, *first_run(data, run, 10)[1:]) == 0  # the whole first command again
    assert C.list_checkpoints(run)[-1].name == "ckpt-0000010.pt"


def test_a_batch_larger_than_the_data_resumes_with_the_same_command(tmp_path, capsys):
    """16 images and --batch-size 32: the run trains with batches of 16 but keeps the 32 asked
    for, so that the first command given again with --resume is accepted."""
    data, run = images(tmp_path / "data"), tmp_path / "run"
    argv = first_run(data, run, 4)
    argv[argv.index("--batch-size") + 1] = "32"
    assert main(argv) == 0
    assert "training with batches of 16" in capsys.readouterr().err
    assert settings(run / "ckpt-0000004.pt")["batch_size"] == 32
    argv[argv.index("--steps") + 1] = "6"
    assert main([*argv, "--resume"]) == 0, capsys.readouterr().err
    assert C.list_checkpoints(run)[-1].name == "ckpt-0000006.pt"


def test_the_help_says_which_settings_may_change_on_resume():
    helps = {a.dest: a.help for a in build_parser().commands["train"]._actions}
    for name in ("steps", "max_minutes", "log_every", "sample_every", "device", "eval_every"):
        assert helps[name].endswith("(may change on --resume)"), name
    for name in ("schedule", "T", "prediction", "lr", "batch_size", "seed", "preset"):
        assert "--resume" not in helps[name], name


def test_a_checkpoint_from_before_resumes_with_its_own_settings(tmp_path):
    """Its train_config holds settings since removed (ignored) and a data path that is gone:
    --data says where the data is now, everything else comes from the checkpoint."""
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(BEFORE / "ckpt-0000006.pt", out / "ckpt-0000006.pt")
    data = images(tmp_path / "data")
    assert resume(out, "--data", str(data), "--steps", "8") == 0
    saved = settings(out / "ckpt-0000008.pt")
    assert (saved["T"], saved["seed"], saved["batch_size"], saved["data"]) == (50, 3, 4, str(data))
    assert len(losses(out / "log.csv")) == 2  # steps 7 and 8


def test_a_second_ctrl_c_during_the_last_checkpoint_waits_for_it(
    finished, tmp_path, monkeypatch, capfd
):
    """Ctrl-C during the checkpoint of step 4, and again inside the write of the checkpoint it
    asks for (step 5): that checkpoint is written whole, the run exits as for one Ctrl-C."""
    data, run = finished[0], tmp_path / "run"
    real_save, writes = torch.save, []

    def save(obj, f, *args, **kw):
        if isinstance(obj, dict) and "format" in obj:
            writes.append(obj["step"])
            if len(writes) <= 2:  # the signal is handled here, inside atomic_save's write
                os.kill(os.getpid(), signal.SIGINT)
        return real_save(obj, f, *args, **kw)

    monkeypatch.setattr(torch, "save", save)
    code = main(first_run(data, run, 100))
    out, err = capfd.readouterr()
    assert writes == [4, 5]
    assert C.load_checkpoint(run / "ckpt-0000005.pt")["step"] == 5
    assert C.load_checkpoint(run / "ckpt-0000004.pt")["step"] == 4
    assert not list(run.glob(".*.tmp"))
    assert code == 130 and "stopped at step 5" in out
    assert err == (FIRST + AGAIN).decode()  # each said once, no traceback


def test_every_log_row_averages_its_whole_window_across_a_stop_and_a_resume(finished, tmp_path):
    """Logging every 3 steps, a run stopped at step 4 (a row between two multiples, and the
    checkpoint in the middle of a window) and resumed to 10 logs what the run that never
    stopped logged: the rows at 3, 6, 9 and 10, none at 4, and the same mean losses."""
    data, _ = finished
    every = ["--log-every", "3"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert main([*first_run(data, whole, 10), *every]) == 0
    assert main([*first_run(data, parts, 4), *every]) == 0
    assert [r["step"] for r in log_rows(parts)] == ["3", "4"]  # the row at 4 is provisional
    assert resume(parts, "--steps", "10") == 0
    a, b = log_rows(whole), log_rows(parts)
    assert [r["step"] for r in a] == [r["step"] for r in b] == ["3", "6", "9", "10"]
    for ra, rb in zip(a, b):
        assert float(rb["loss"]) == pytest.approx(float(ra["loss"]), rel=1e-5), ra["step"]
        assert ra["nonfinite"] == rb["nonfinite"] == "0"


def log_rows(run) -> list[dict]:
    with (run / "log.csv").open() as f:
        return list(csv.DictReader(f))


def test_resuming_on_data_of_other_channels_names_the_field_that_differs(stopped, tmp_path, capsys):
    from PIL import Image

    _, run = stopped
    gray = tmp_path / "gray"
    gray.mkdir()
    for i in range(8):
        Image.new("L", (8, 8), 16 * i).save(gray / f"{i}.png")
    assert resume(run, "--data", str(gray)) != 0
    err = capsys.readouterr().err.strip()
    assert "the checkpoint's model differs from this run's (in_channels 3 vs 1" in err, err
    assert len(err.splitlines()) == 1 and len(err) < 300
