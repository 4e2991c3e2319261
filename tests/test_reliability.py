"""Crash safety, clean stops and hostile input (issue 6)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ddpm.cli import main
from ddpm.data.images import load_dataset
from ddpm.errors import DataError
from ddpm.io import checkpoint as C

WRITER = textwrap.dedent(
    """
    import sys, torch
    from ddpm.io.checkpoint import atomic_save, FORMAT
    path = sys.argv[1]
    # 24 MB: each write takes long enough to be interrupted
    big = torch.randn(6_000_000, generator=torch.Generator().manual_seed(0))
    step = 0
    while True:
        step += 1
        atomic_save({"format": FORMAT, "step": step, "w": big + step}, path)
        print(step, flush=True)
    """
)


@pytest.mark.slow  # 9 s: CI runs it with the slow tests
@pytest.mark.subprocess
def test_kill_9_while_writing_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    base = torch.randn(6_000_000, generator=torch.Generator().manual_seed(0))
    for delay in (0.05, 0.13, 0.29):
        proc = subprocess.Popen([sys.executable, str(script), str(path)], stdout=subprocess.PIPE)
        proc.stdout.readline()  # the first checkpoint is complete
        time.sleep(delay)  # then kill at some point in a later write
        proc.kill()
        proc.wait()
        ckpt = C.load_checkpoint(path)
        assert ckpt["step"] >= 1
        # the tensor is whole and belongs to the step saved with it
        torch.testing.assert_close(ckpt["w"] - ckpt["step"], base, rtol=0, atol=1e-5)


def _image_folder(root, n=12, size=(10, 10)):
    root.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        arr = (torch.rand(*size, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(root / f"{i}.png")
    return root


@pytest.mark.subprocess
def test_ctrl_c_finishes_the_step_writes_a_checkpoint_and_says_how_to_resume(tmp_path):
    data = _image_folder(tmp_path / "imgs")
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "ddpm.cli",
        "train",
        "--data",
        str(data),
        "--preset",
        "small",
        "--image-size",
        "8",
        "--batch-size",
        "4",
        "--steps",
        "100000",
        "--T",
        "50",
        "--checkpoint-every",
        "5",
        "--sample-every",
        "100000",
        "--log-every",
        "5",
        "--out",
        str(run),
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not C.list_checkpoints(run) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "--resume" in out
    last = C.list_checkpoints(run)[-1]
    step = C.load_checkpoint(last)["step"]
    assert last.name == f"ckpt-{step:07d}.pt"


# --- hostile flags and files ------------------------------------------------------------------

BAD_NUMBERS = st.one_of(
    st.sampled_from(["0", "-1", "nan", "inf", "-inf", "", "1e", "abc", "0x", "--", "1.5.2"]),
    st.integers(max_value=0).map(str),
    st.text(alphabet="abcxyz!@#%^&*()[]{} ", min_size=1, max_size=8),
)
INT_FLAGS = [
    "--steps",
    "--batch-size",
    "--T",
    "--log-every",
    "--sample-every",
    "--checkpoint-every",
    "--num-samples",
    "--keep-checkpoints",
]
FLOAT_FLAGS = ["--lr", "--min-snr-gamma"]
NONNEG_FLAGS = ["--grad-clip"]  # 0 is valid: no clipping
CHOICE_FLAGS = ["--preset", "--schedule", "--prediction", "--loss", "--resize", "--lr-decay"]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(flag=st.sampled_from(INT_FLAGS + FLOAT_FLAGS + NONNEG_FLAGS), value=BAD_NUMBERS)
def test_invalid_numeric_flags_exit_2_naming_the_flag(capsys, flag, value):
    if flag in FLOAT_FLAGS + NONNEG_FLAGS:
        lowest_ok = 0.0 if flag in NONNEG_FLAGS else float.fromhex("0x1p-1074")
        try:
            ok = float(value) >= lowest_ok and float(value) != float("inf")
        except ValueError:
            ok = False
        if ok:
            return
    with pytest.raises(SystemExit) as e:
        sys.exit(main(["train", f"{flag}={value}"]))
    assert e.value.code == 2
    err = capsys.readouterr().err
    last = [line for line in err.splitlines() if ": error: " in line][-1]
    field = flag.lstrip("-").replace("-", "_")
    assert "Traceback" not in err and (f"argument {flag}" in last or f"error: {field} " in last)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(flag=st.sampled_from(CHOICE_FLAGS), value=st.text(min_size=1, max_size=12))
def test_invalid_choices_exit_2_listing_the_allowed_values(capsys, flag, value):
    from ddpm.cli import build_parser

    action = next(
        a
        for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
        if flag in a.option_strings
    )
    if value in action.choices:
        return
    with pytest.raises(SystemExit) as e:
        main(["train", f"{flag}={value}"])
    assert e.value.code == 2
    last = [ln for ln in capsys.readouterr().err.splitlines() if ": error: " in ln][-1]
    assert f"argument {flag}: invalid choice" in last and "choose from" in last


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.binary(min_size=0, max_size=2048))
def test_random_bytes_as_a_checkpoint_give_a_clear_error(tmp_path, blob):
    path = tmp_path / "random.pt"
    path.write_bytes(blob)
    with pytest.raises(C.CheckpointError, match="random.pt"):
        C.load_checkpoint(path)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.binary(min_size=0, max_size=2048), ext=st.sampled_from([".png", ".jpg", ".zip"]))
def test_random_bytes_as_images_or_zips_give_a_clear_error(tmp_path, blob, ext):
    folder = tmp_path / f"d{os.urandom(4).hex()}"
    folder.mkdir()
    (folder / f"x{ext}").write_bytes(blob)
    target = folder / f"x{ext}" if ext == ".zip" else folder
    with pytest.raises(DataError, match=str(folder.name)):
        load_dataset(str(target), (8, 8), 3, strict=False)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(blob=st.binary(min_size=0, max_size=2048), zip_header=st.booleans())
def test_random_bytes_as_a_stats_file_give_a_clear_error(tmp_path, blob, zip_header):
    from ddpm.eval.evaluate import load_stats

    path = tmp_path / "stats.npz"
    path.write_bytes((b"PK\x03\x04" if zip_header else b"") + blob)  # .npz files are zips
    with pytest.raises(DataError, match="stats.npz"):
        load_stats(path)
