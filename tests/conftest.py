import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from ddpm.data.images import ImageDataset
from ddpm.models.presets import PRESETS, ModelSpec
from ddpm.train import TrainConfig

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """The script benchmarks/NAME.py as a module (its folder on sys.path, for `common`)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# A 2-level U-Net that trains in milliseconds on 8x8 images.
TINY_UNET = dict(
    base_channels=16,
    channel_mults=(1, 2),
    num_res_blocks=1,
    attention_levels=(1,),
    norm_groups=8,
    dropout=0.0,
)

# The same layout as a diffusers UNet2DModel config (the interchange and peer tests).
TINY_UNET2D = dict(
    sample_size=8,
    block_out_channels=(16, 32),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
)


def run(capsys, argv):
    """(exit code, stdout, stderr) of `ddpm argv`, whether it returns or exits, with no
    traceback on stderr."""
    from ddpm.cli import main

    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def tiny_config(tmp_path, **kw) -> TrainConfig:
    """A training run of the "tiny" preset (needs the tiny_preset fixture): 20 quick steps."""
    base = dict(
        preset="tiny",
        T=100,
        steps=20,
        batch_size=16,
        lr=2e-3,
        warmup=5,
        log_every=5,
        sample_every=1000,
        checkpoint_every=10,
        sample_steps=5,
        num_samples=4,
        out=str(tmp_path / "run"),
    )
    return TrainConfig(**{**base, **kw})


@pytest.fixture(autouse=True)
def _deterministic(monkeypatch):
    torch.manual_seed(0)
    # `ddpm ...` measures the CPU threads to use at each start (ddpm.speed.set_cpu_threads):
    # in tests every command keeps the count pytest runs with, so that results compared across
    # commands are bit-identical however busy the machine is; --threads N still applies
    from ddpm import speed

    monkeypatch.setattr(speed, "pick_cpu_threads", lambda seconds=0.05: torch.get_num_threads())


@pytest.fixture
def tiny_preset(monkeypatch):
    """Register the preset "tiny" (TINY_UNET at 8x8) for the duration of a test."""
    monkeypatch.setitem(PRESETS, "tiny", ModelSpec("unet", dict(TINY_UNET), (8, 8)))


@pytest.fixture
def blobs() -> ImageDataset:
    """A tiny 'dataset': 64 grayscale 8x8 images of a bright square at one of four places."""
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(64, 1, 8, 8, dtype=torch.uint8)
    for i in range(64):
        r, c = divmod(int(torch.randint(0, 4, (1,), generator=g)), 2)
        images[i, 0, r * 4 : r * 4 + 4, c * 4 : c * 4 + 4] = 255
    return ImageDataset(images, source="blobs")
