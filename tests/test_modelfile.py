"""Model files: checkpoints from before a config field existed, and the safetensors export."""

import json

import pytest
import torch
from PIL import Image

import conftest
from ddpm.cli import main
from ddpm.io import checkpoint as C
from ddpm.io.interchange import export_model
from ddpm.models.presets import PRESETS, ModelSpec
from ddpm.sampling.loaded import load_model
from ddpm.train import StopAfter, TrainConfig, train

pytestmark = pytest.mark.usefixtures("tiny_preset")

NEW_FIELDS = ("norm_eps", "downsample_padding", "freq_shift")


def tiny_config(tmp_path, **kw) -> TrainConfig:
    """conftest's tiny run, shorter: 4 steps with a checkpoint every 2 (at TrainConfig's own
    learning rate and warm-up)."""
    short = dict(
        T=50,
        steps=4,
        batch_size=8,
        lr=TrainConfig.lr,
        warmup=TrainConfig.warmup,
        log_every=2,
        checkpoint_every=2,
        sample_steps=2,
        num_samples=2,
    )
    return conftest.tiny_config(tmp_path, **{**short, **kw})


def test_a_checkpoint_written_before_the_new_unet_fields_loads_and_resumes(tmp_path, blobs):
    cfg = tiny_config(tmp_path)
    first = train(cfg, data=blobs, progress=False, hooks=[StopAfter(2)])
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


def trained(tmp_path, blobs, **kw):
    return train(tiny_config(tmp_path, **kw), data=blobs, progress=False).last_checkpoint


def same_function(a, b, channels=1, atol=0.0):
    x, t = torch.randn(3, channels, 8, 8), torch.tensor([0, 17, 49])
    with torch.no_grad():
        torch.testing.assert_close(a(x, t), b(x, t), atol=atol, rtol=atol)


def test_the_safetensors_export_round_trips(tmp_path, blobs, capsys):
    from safetensors import safe_open

    ckpt = trained(tmp_path, blobs, prediction="v")
    out = tmp_path / "model.safetensors"
    assert main(["export", str(ckpt), "--out", str(out)]) == 0
    assert "wrote EMA weights of step 4" in capsys.readouterr().out
    with safe_open(str(out), framework="pt") as f:
        header = json.loads(f.metadata()["ddpm"])
    assert header["arch"] == "unet" and header["prediction"] == "v" and header["step"] == 4
    assert header["schedule"] == {
        "schedule": "linear",
        "T": 50,
        "beta_start": None,
        "beta_end": None,
    }
    exported, original = load_model(out), load_model(ckpt)
    assert exported.origin == "safetensors" and exported.shape == original.shape
    same_function(exported.model, original.model)
    torch.testing.assert_close(exported.schedule.alphas_cumprod, original.schedule.alphas_cumprod)
    # and `ddpm sample` takes it as it takes the checkpoint: the same images
    for src, png in ((out, "a.png"), (ckpt, "b.png")):
        argv = ["sample", "--checkpoint", str(src), "--n", "2", "--steps", "3"]
        assert main([*argv, "--out", str(tmp_path / png)]) == 0
    a, b = (Image.open(tmp_path / p) for p in ("a.png", "b.png"))
    assert list(a.getdata()) == list(b.getdata())

    raw = tmp_path / "raw.safetensors"
    assert main(["export", str(ckpt), "--out", str(raw), "--raw-weights"]) == 0
    same_function(load_model(raw).model, load_model(ckpt, raw_weights=True).model)


def test_the_tutorial_network_exports_to_safetensors_with_its_batchnorm_buffers(tmp_path, blobs):
    spec = ModelSpec("tutorial", {"channels": (8, 16), "time_dim": 8}, (8, 8))
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRESETS, "tut", spec)
        ckpt = trained(tmp_path, blobs, preset="tut")
    out = tmp_path / "tut.safetensors"
    export_model(ckpt, "safetensors", out)
    exported, original = load_model(out), load_model(ckpt)
    assert any("running_mean" in k for k in exported.model.state_dict())
    same_function(exported.model, original.model)


def test_a_non_safetensors_or_foreign_file_is_refused_with_one_line(tmp_path, capsys):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    assert main(["sample", "--checkpoint", str(foreign)]) == 1
    assert "without a ddpm-from-scratch description" in capsys.readouterr().err
    assert (
        main(["export", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x.safetensors")]) == 1
    )
    assert "none.pt: no such file or folder" in capsys.readouterr().err
    # an export named as another kind of file is refused before the checkpoint is read
    assert main(["export", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x.txt")]) == 2
    assert "x.txt: a safetensors export must end in .safetensors" in capsys.readouterr().err
    assert not (tmp_path / "x.txt").exists()
