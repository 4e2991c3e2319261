"""diffusers interchange: a UNet2DModel folder loads into our U-Net and computes the same
function; the name table works both ways; the scheduler gives our schedule; what we cannot
express is refused with a line naming it. diffusers itself is the oracle (a test dependency).
"""

import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import TINY_UNET2D
from ddpm.cli import main
from ddpm.diffusion.schedule import make_schedule
from ddpm.errors import CheckpointError, ConfigError
from ddpm.io.diffusers_convert import (
    diffusers_unet_config,
    from_diffusers_state_dict,
    schedule_from_diffusers,
    to_diffusers_state_dict,
    unet_config_from_diffusers,
)
from ddpm.io.modelfile import ModelFile
from ddpm.models.presets import PRESETS, build_model, count_parameters, full_config
from ddpm.models.unet import UNet, UNetConfig
from ddpm.sampling.generate import generate
from ddpm.sampling.loaded import load_model
from test_evaluate import fake_inception  # noqa: F401  (a fixture)

diffusers = pytest.importorskip("diffusers")
diffusers.utils.logging.set_verbosity_error()

# google/ddpm-cifar10-32's config.json as published (diffusers 0.0.4 wrote it): Ho et al.'s
# network with TensorFlow's padding, GroupNorm eps 1e-6 and their time embedding.
GOOGLE_CIFAR10 = {
    "_class_name": "UNet2DModel",
    "_diffusers_version": "0.0.4",
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [128, 256, 256, 256],
    "center_input_sample": False,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 32,
    "time_embedding_type": "positional",
    "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
}
GOOGLE_SCHEDULER = {
    "_class_name": "DDPMScheduler",
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "clip_sample": True,
    "num_train_timesteps": 1000,
    "trained_betas": None,
    "variance_type": "fixed_small",
}

# Tiny UNet2DModels: as google's checkpoints (TF padding, eps 1e-6, [sin, cos], shift 1), and
# as diffusers' defaults ([cos, sin], shift 0, two heads of 16 channels).
VARIANTS = {
    "google": dict(
        attention_head_dim=None,
        norm_eps=1e-6,
        downsample_padding=0,
        flip_sin_to_cos=False,
        freq_shift=1,
    ),
    "defaults": dict(attention_head_dim=16),
}


def random_unet(in_channels=3, **overrides):
    """A UNet2DModel with every weight random (no zero-initialised layer hides a mismatch)."""
    model = diffusers.UNet2DModel(
        in_channels=in_channels, out_channels=in_channels, **{**TINY_UNET2D, **overrides}
    )
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def save_pipeline(model, path, **scheduler):
    sched = diffusers.DDPMScheduler(**scheduler)
    diffusers.DDPMPipeline(unet=model, scheduler=sched).save_pretrained(path)
    return sched


class Peer(torch.nn.Module):
    """diffusers' network as a plain (x_t, t) -> eps module."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x_t, t):
        return self.unet(x_t, t).sample


def same_output(theirs, ours, in_channels=3, size=8):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, in_channels, size, size, generator=g)
    t = torch.tensor([0, 17, 500, 999])
    with torch.no_grad():
        expected = theirs(x, t).sample
        got = ours(x, t)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_the_published_cifar10_config_is_our_preset():
    cfg, flip = unet_config_from_diffusers(GOOGLE_CIFAR10, "config.json")
    preset = UNetConfig(**PRESETS["ddpm-cifar10"].config)
    ours = UNetConfig(**cfg)
    # the same network up to three numerical details, which the config carries
    assert (ours.norm_eps, ours.downsample_padding, ours.freq_shift, flip) == (1e-6, 0, 1, False)
    for field in ("base_channels", "channel_mults", "num_res_blocks", "attention_levels"):
        assert getattr(ours, field) == getattr(preset, field)
    assert ours.num_heads == preset.num_heads and ours.norm_groups == preset.norm_groups
    with torch.device("meta"):  # counted without allocating the weights
        theirs = diffusers.UNet2DModel(**{k: v for k, v in GOOGLE_CIFAR10.items() if k[0] != "_"})
        assert count_parameters(UNet(ours)) == count_parameters(theirs) == 35_746_307


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_saved_pipeline_loads_and_computes_the_same_function(tmp_path, variant):
    theirs = random_unet(**VARIANTS[variant])
    sched = save_pipeline(theirs, tmp_path / "pipe", **GOOGLE_SCHEDULER)
    loaded = load_model(tmp_path / "pipe")
    assert loaded.shape == (3, 8, 8) and loaded.prediction == "eps"
    assert loaded.origin == "diffusers"
    same_output(theirs, loaded.model)
    torch.testing.assert_close(
        loaded.schedule.alphas_cumprod.float(), sched.alphas_cumprod, atol=1e-6, rtol=1e-5
    )


def test_a_bare_unet_folder_with_old_attention_names_loads(tmp_path):
    """google/ddpm-* folders as first published: config.json, the weights and
    scheduler_config.json side by side, attention named query/key/value/proj_attn."""
    from safetensors.torch import load_file, save_file

    theirs = random_unet(in_channels=1, **VARIANTS["google"])
    theirs.save_pretrained(tmp_path)
    weights = tmp_path / "diffusion_pytorch_model.safetensors"
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    sd = {}
    for k, v in load_file(weights).items():
        for new, name in old.items():
            k = k.replace(f".{new}.", f".{name}.")
        sd[k] = v
    assert any(".query." in k for k in sd)
    save_file(sd, weights)
    sched = {
        **GOOGLE_SCHEDULER,
        "beta_schedule": "squaredcos_cap_v2",
        "prediction_type": "v_prediction",
    }
    (tmp_path / "scheduler_config.json").write_text(json.dumps(sched))
    loaded = load_model(tmp_path)
    assert loaded.prediction == "v" and loaded.shape == (1, 8, 8)
    same_output(theirs, loaded.model, in_channels=1)
    torch.testing.assert_close(
        loaded.schedule.alphas_cumprod, make_schedule("cosine", 1000).alphas_cumprod
    )


@pytest.mark.parametrize("scale_shift", [False, True])
def test_the_name_table_works_both_ways(tiny_preset, scale_shift):
    ours = build_model(
        "unet", {**PRESETS["tiny"].config, "in_channels": 3, "scale_shift": scale_shift}
    )
    sd = ours.state_dict()
    theirs_sd = to_diffusers_state_dict(sd)
    config = diffusers_unet_config("unet", full_config("unet", ours.config.__dict__), (3, 8, 8))
    theirs = diffusers.UNet2DModel(**{k: v for k, v in config.items() if k[0] != "_"})
    theirs.load_state_dict(theirs_sd, strict=True)  # every name placed, none left over
    assert unet_config_from_diffusers(config, "config.json")[0]["scale_shift"] == scale_shift
    back = from_diffusers_state_dict(theirs_sd)
    assert back.keys() == sd.keys()
    for k in sd:
        assert torch.equal(back[k], sd[k]), k
    for p in ours.parameters():  # and, with every weight random, the same function
        p.data.normal_(0, 0.2)
    theirs.load_state_dict(to_diffusers_state_dict(ours.state_dict()))
    same_output(theirs.eval(), ours.eval())


@pytest.mark.parametrize(
    "name, diffusers_name",
    [
        ("linear", "linear"),
        ("quadratic", "scaled_linear"),
        ("cosine", "squaredcos_cap_v2"),
        ("sigmoid", "sigmoid"),
    ],
)
def test_scheduler_configs_give_our_schedules(name, diffusers_name):
    sched = diffusers.DDPMScheduler(
        num_train_timesteps=1000, beta_schedule=diffusers_name, beta_start=1e-4, beta_end=0.02
    )
    spec, prediction = schedule_from_diffusers(dict(sched.config), "scheduler_config.json")
    assert prediction == "eps" and spec["schedule"] == name and spec["T"] == 1000
    mf = ModelFile("unet", {}, {}, (3, 8, 8), spec, "eps", None, "diffusers")
    ours = mf.noise_schedule()
    expected = make_schedule(
        name, 1000, **({} if name == "cosine" else {"beta_start": 1e-4, "beta_end": 0.02})
    )
    torch.testing.assert_close(ours.alphas_cumprod, expected.alphas_cumprod)
    torch.testing.assert_close(
        ours.alphas_cumprod.float(), sched.alphas_cumprod, atol=1e-6, rtol=1e-5
    )


@pytest.mark.parametrize(
    "change, named",
    [
        ({"_class_name": "UNet2DConditionModel"}, "not a UNet2DModel"),
        ({"time_embedding_type": "fourier"}, "time_embedding_type"),
        ({"resnet_time_scale_shift": "ada_group"}, "resnet_time_scale_shift"),
        ({"resnet_time_scale_shift": "scale_shift"}, "attn_norm_num_groups None"),
        ({"out_channels": 6}, "out_channels = 6"),
        ({"num_class_embeds": 10}, "num_class_embeds"),
        (
            {"attention_head_dim": 8, "block_out_channels": [128, 256, 256, 512]},
            "attention_head_dim",
        ),
        ({"up_block_types": ["UpBlock2D"] * 4}, "paired with up block"),
        ({"block_out_channels": [128, 192, 256, 256]}, "multiple of the first"),
    ],
)
def test_configs_we_cannot_express_are_refused(change, named):
    with pytest.raises(CheckpointError, match=named):
        unet_config_from_diffusers({**GOOGLE_CIFAR10, **change}, "config.json")


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


def test_bad_folders_give_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    assert main(["sample", "--checkpoint", str(run)]) == 1  # neither a run nor diffusers
    line = error_line(capsys)
    assert "looked for ckpt-<step>.pt files" in line and "a diffusers folder's config.json" in line
    (run / "ckpt-0000010.pt").write_bytes(b"x")  # a run folder: its newest checkpoint
    assert main(["sample", "--checkpoint", str(run)]) == 1
    assert "ckpt-0000010.pt: not a checkpoint" in error_line(capsys)

    random_unet().save_pretrained(tmp_path / "unet_only")  # no scheduler config anywhere
    assert main(["sample", "--checkpoint", str(tmp_path / "unet_only")]) == 1
    assert "no scheduler config" in error_line(capsys)

    save_pipeline(random_unet(), tmp_path / "pipe", **GOOGLE_SCHEDULER)
    cfg = tmp_path / "pipe" / "unet" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "act_fn": "gelu"}))
    assert main(["sample", "--checkpoint", str(tmp_path / "pipe")]) == 1
    line = error_line(capsys)
    assert "config.json: act_fn = 'gelu'" in line and "cannot express" in line

    save_pipeline(random_unet(), tmp_path / "pipe2", **GOOGLE_SCHEDULER)
    assert main(["sample", "--checkpoint", str(tmp_path / "pipe2"), "--raw-weights"]) == 2
    assert "--raw-weights applies to training checkpoints only" in error_line(capsys)


def test_ddpm_sample_runs_on_a_diffusers_folder(tmp_path, capsys):
    theirs = random_unet(**VARIANTS["google"])
    save_pipeline(theirs, tmp_path / "pipe", num_train_timesteps=50, beta_end=0.2)
    out = tmp_path / "grid.png"
    argv = ["sample", "--checkpoint", str(tmp_path / "pipe"), "--n", "3", "--steps", "5"]
    assert main([*argv, "--out", str(out), "--folder", str(tmp_path / "pngs")]) == 0
    assert out.is_file() and len(list((tmp_path / "pngs").glob("*.png"))) == 3
    # the same images as our sampler run on diffusers' network directly
    loaded = load_model(tmp_path / "pipe")
    x = generate(loaded, 3, steps=5, clip=True)
    peer = dataclasses.replace(loaded, model=Peer(theirs))
    torch.testing.assert_close(generate(peer, 3, steps=5, clip=True), x, atol=1e-4, rtol=0)


@pytest.mark.usefixtures("fake_inception")
def test_ddpm_eval_scores_a_diffusers_folder(tmp_path, capsys):
    from test_evaluate import image_folder

    data = image_folder(tmp_path / "data", 6, 0)
    stats = tmp_path / "ref.npz"
    assert main(["fid-stats", str(data), "-o", str(stats), "--quiet"]) == 0
    save_pipeline(random_unet(), tmp_path / "pipe", num_train_timesteps=20, beta_end=0.3)
    out = tmp_path / "eval.json"
    argv = ["eval", "--checkpoint", str(tmp_path / "pipe"), "--fid-stats", str(stats)]
    argv += ["--n", "4", "--steps", "5", "--json", str(out), "--quiet", "--nll"]
    assert main([*argv, "--data", str(data)]) == 0
    text = capsys.readouterr().out
    record = json.loads(out.read_text())
    assert record["weights"] == "diffusers" and record["step"] is None
    assert record["fid"]["n"] == 4 and record["nll"]["T"] == 20
    assert text.count("the diffusers folder's weights") == 2


@pytest.fixture
def checkpoint(tmp_path, blobs, tiny_preset):
    from ddpm.train import TrainConfig, train

    cfg = TrainConfig(
        preset="tiny",
        T=40,
        steps=3,
        batch_size=8,
        sample_every=100,
        checkpoint_every=100,
        sample_steps=2,
        num_samples=2,
        prediction="v",
        schedule="cosine",
        out=str(tmp_path / "run"),
    )
    return train(cfg, data=blobs, progress=False).last_checkpoint


def randomised(path):
    """The checkpoint with every EMA weight random: zero-initialised layers hide nothing."""
    from ddpm.io import checkpoint as C

    ckpt = C.load_checkpoint(path)
    g = torch.Generator().manual_seed(3)
    for v in ckpt["ema"].values():
        v.copy_(torch.randn(v.shape, generator=g) * 0.2)
    C.atomic_save(ckpt, path)
    return path


def test_export_to_diffusers_then_ddpm_pipeline_computes_our_function(tmp_path, checkpoint, capsys):
    ckpt = randomised(checkpoint)
    out = tmp_path / "exported"
    assert main(["export", str(ckpt), "--format", "diffusers", "--out", str(out)]) == 0
    assert "wrote EMA weights of step 3" in capsys.readouterr().out
    pipe = diffusers.DDPMPipeline.from_pretrained(out)
    ours = load_model(ckpt)
    same_output(pipe.unet.eval(), ours.model, in_channels=1)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    torch.testing.assert_close(
        pipe.scheduler.alphas_cumprod, ours.schedule.alphas_cumprod.float(), atol=1e-6, rtol=1e-5
    )
    images = pipe(
        batch_size=2,
        num_inference_steps=3,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images
    assert images.shape == (2, 8, 8, 1) and np.isfinite(images).all()
    # and back: the folder loads as the checkpoint did
    back = load_model(out)
    assert (back.prediction, back.shape) == ("v", (1, 8, 8))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0, 39])
    with torch.no_grad():
        torch.testing.assert_close(back.model(x, t), ours.model(x, t), atol=1e-5, rtol=1e-5)


def test_a_diffusers_folder_exports_to_safetensors(tmp_path):
    theirs = random_unet(**VARIANTS["defaults"])
    save_pipeline(theirs, tmp_path / "pipe", **GOOGLE_SCHEDULER)
    assert main(["export", str(tmp_path / "pipe"), "--out", str(tmp_path / "m.safetensors")]) == 0
    same_output(theirs, load_model(tmp_path / "m.safetensors").model)


def test_what_diffusers_cannot_express_is_refused_before_writing(tmp_path, checkpoint, capsys):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(checkpoint), "--format", "diffusers", "--out", str(out)]) == 2
    assert "exists and is not an empty folder" in error_line(capsys)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    tiny = {**PRESETS["tiny"].config, "in_channels": 3}
    for change, named in [
        ({"learn_sigma": True}, "learned-variance"),
        ({"num_classes": 10}, "class-conditional"),
        ({"channel_mults": (2, 2)}, "first multiplier must be 1"),
        ({"num_heads": 2, "channel_mults": (1, 2), "attention_levels": (0,)}, "head width"),
    ]:
        with pytest.raises(ConfigError, match=named):
            diffusers_unet_config("unet", {**tiny, **change}, (3, 8, 8))
    with pytest.raises(ConfigError, match="SimpleUnet"):
        diffusers_unet_config("tutorial", {}, (3, 64, 64))
    with pytest.raises(ConfigError, match="architecture 'mlp'"):
        diffusers_unet_config("mlp", {}, (2,))
