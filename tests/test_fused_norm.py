"""The fused GroupNorm + scale/shift + SiLU (`ddpm.models.fused_norm`) computes what the plain
modules compute, forward and backward, in either memory layout: its Triton kernels run on
Triton's CPU interpreter (the cases in fused_norm_cases.py, in a process of their own);
`benchmarks/fused_norm_check.py` checks them on a GPU at bf16. Without CUDA a model with fused
norms runs the plain modules bit for bit."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import TINY_UNET
from ddpm.models.layers import fuse_norms
from ddpm.models.unet import UNet, UNetConfig


@pytest.mark.slow  # 15 s: CI runs it with the slow tests
@pytest.mark.subprocess
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_the_kernels_match_the_plain_modules_on_the_triton_interpreter():
    cases = Path(__file__).with_name("fused_norm_cases.py")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(cases)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "15 passed" in done.stdout or "17 passed" in done.stdout, done.stdout[-2000:]


def test_on_the_cpu_fused_norms_are_the_plain_modules_bit_for_bit():
    torch.manual_seed(0)
    model = UNet(UNetConfig(**TINY_UNET, in_channels=1, scale_shift=True))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 700])
    before = model(x, t)
    assert torch.equal(fuse_norms(model)(x, t), before)


@pytest.mark.usefixtures("tiny_preset")
def test_fused_norm_is_ignored_on_the_cpu(tmp_path, blobs):
    from ddpm.train import TrainConfig, train

    def losses(fused: bool) -> list[str]:
        out = tmp_path / str(fused)
        cfg = TrainConfig(preset="tiny", T=20, steps=4, batch_size=4, log_every=1, out=str(out),
                          sample_every=100, checkpoint_every=100, fused_norm=fused)  # fmt: skip
        train(cfg, data=blobs, progress=False)
        return [row.split(",")[1] for row in (out / "log.csv").read_text().splitlines()[1:]]

    assert losses(True) == losses(False)
