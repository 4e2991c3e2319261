"""Model files: checkpoints from before a config field existed, and the safetensors export."""

import pytest
import torch

from ddpm import checkpoint as C
from ddpm.generate import load_model
from ddpm.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("tiny_preset")

NEW_FIELDS = ("norm_eps", "downsample_padding", "freq_shift")


def tiny_config(tmp_path, **kw) -> TrainConfig:
    base = dict(
        preset="tiny",
        T=50,
        steps=4,
        batch_size=8,
        log_every=2,
        sample_every=1000,
        checkpoint_every=2,
        sample_steps=2,
        num_samples=2,
        out=str(tmp_path / "run"),
    )
    return TrainConfig(**{**base, **kw})


def test_a_checkpoint_written_before_the_new_unet_fields_loads_and_resumes(tmp_path, blobs):
    cfg = tiny_config(tmp_path)
    first = train(cfg, data=blobs, progress=False, stop_after=2)
    ckpt = C.load_checkpoint(first.last_checkpoint)
    assert all(k in ckpt["model_config"] for k in NEW_FIELDS)
    for k in NEW_FIELDS:  # as a checkpoint of the previous version has it
        del ckpt["model_config"][k]
    old = tmp_path / "old" / "ckpt-0000002.pt"
    C.atomic_save(ckpt, old)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0, 49])
    with torch.no_grad():
        assert torch.equal(
            load_model(old).model(x, t), load_model(first.last_checkpoint).model(x, t)
        )
    resumed = train(
        tiny_config(tmp_path, out=str(old.parent)), data=blobs, progress=False, resume="auto"
    )
    assert resumed.step == 4
