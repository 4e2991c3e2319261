"""benchmarks/fused_norm_check.py runs its checks on Triton's CPU interpreter at tiny shapes
(on a GPU it checks and times the kernels at the CIFAR-10 network's shapes)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "fused_norm_check.py"
pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="no Triton"),
]


def check(tmp_path, interpret: bool, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run(
        [sys.executable, str(SCRIPT), *argv], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_every_check_passes_on_the_interpreter(tmp_path):
    argv = ["--device", "cpu", "--small", "--presets", "small", "--no-timing", "--json", "r.json"]
    done = check(tmp_path, True, *argv)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (record,) = json.loads((tmp_path / "r.json").read_text())["records"]
    assert len(record["forms"]) == 8 and len(record["models"]) == 1
    assert all(r["ok"] for r in record["forms"] + record["models"])
    assert "PASS: 9 of 9 checks" in done.stdout


def test_on_a_cpu_without_the_interpreter_it_says_what_it_needs(tmp_path):
    done = check(tmp_path, False, "--device", "cpu", "--small")
    assert done.returncode != 0 and "TRITON_INTERPRET=1" in done.stderr
    assert "Traceback" not in done.stderr
