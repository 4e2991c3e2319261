import pytest
import torch

from conftest import TINY_UNET
from ddpm.errors import ConfigError
from ddpm.models.presets import PRESETS, build_model, count_parameters, preset
from ddpm.models.tutorial_unet import TutorialUNet, TutorialUNetConfig
from ddpm.models.unet import UNet, UNetConfig

TINY = TINY_UNET


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("hw", [(16, 16), (8, 24)])
def test_unet_output_shape(channels, hw):
    model = UNet(UNetConfig(in_channels=channels, **TINY))
    x = torch.randn(2, channels, *hw)
    assert model(x, torch.tensor([0, 999])).shape == x.shape


def test_unet_learn_sigma_doubles_channels_and_class_conditioning():
    model = UNet(UNetConfig(in_channels=3, learn_sigma=True, num_classes=10, **TINY))
    out = model(torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), torch.tensor([3, 4]))
    assert out.shape == (2, 6, 8, 8)


def test_tutorial_unet_shapes():
    model = TutorialUNet(TutorialUNetConfig(in_channels=1, channels=(8, 16, 32)))
    x = torch.randn(2, 1, 12, 20)
    assert model(x, torch.tensor([3, 7])).shape == x.shape
    sigma = TutorialUNet(TutorialUNetConfig(in_channels=1, channels=(8, 16, 32), learn_sigma=True))
    assert sigma(x, torch.tensor([3, 7])).shape == (2, 2, 12, 20)


def test_configs_stored_before_learn_sigma_existed_read_as_fixed_variances():
    from ddpm.models.presets import config_dict, full_config

    old = {"in_channels": 1, "channels": [8, 16], "time_dim": 8}  # no learn_sigma key
    model = build_model("tutorial", old)
    assert model.config.learn_sigma is False and model.output.out_channels == 1
    assert full_config("tutorial", old) == config_dict(model)


def test_preset_parameter_counts_match_the_papers():
    counts = {
        n: count_parameters(build_model(s.arch, s.config))
        for n, s in PRESETS.items()
        if n in ("ddpm-cifar10", "tutorial")
    }
    assert abs(counts["ddpm-cifar10"] - 35.7e6) / 35.7e6 < 0.01  # Ho et al. 2020, Table 1 note
    assert counts["tutorial"] == 62_438_883  # the tutorial prints "Num params: 62438883"


def test_time_embedding_changes_the_output():
    model = UNet(UNetConfig(in_channels=1, **TINY))
    for p in model.parameters():  # zero-initialised output layers would hide the dependence
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(1, 1, 8, 8)
    assert not torch.allclose(model(x, torch.tensor([0])), model(x, torch.tensor([500])))


def test_scale_shift_with_a_zero_projection_is_the_additive_block():
    """AdaGN's GN(h)(1 + s) + b at s = b = 0 is GN(h), as the additive block with e = 0; with
    a random projection the two differ (the embedding acts through both scale and shift)."""
    from ddpm.models.layers import ResBlock

    torch.manual_seed(0)
    add, ada = ResBlock(8, 16, 12, 0.0, 4), ResBlock(8, 16, 12, 0.0, 4, scale_shift=True)
    assert ada.time_proj.out_features == 32
    shared = {k: v for k, v in add.state_dict().items() if not k.startswith("time_proj")}
    ada.load_state_dict(shared, strict=False)
    for block in (add, ada):
        torch.nn.init.normal_(block.conv2.weight, std=0.1)  # zero-initialised: would hide h
        torch.nn.init.zeros_(block.time_proj.weight)
        torch.nn.init.zeros_(block.time_proj.bias)
    ada.conv2.load_state_dict(add.conv2.state_dict())
    x, emb = torch.randn(2, 8, 6, 6), torch.randn(2, 12)
    torch.testing.assert_close(ada(x, emb), add(x, emb))
    torch.nn.init.normal_(ada.time_proj.weight, std=0.5)
    scale_only = ada.time_proj.weight.detach().clone()
    scale_only[16:] = 0  # the shift half zero: the scale alone still moves the output
    with torch.no_grad():
        ada.time_proj.weight.copy_(scale_only)
    assert not torch.allclose(ada(x, emb), add(x, emb), atol=1e-3)


def test_scale_shift_is_an_architecture_flag():
    from ddpm.cli import build_parser
    from ddpm.cli.train import config_from_args

    cfg = config_from_args(build_parser().parse_args(["train", "--data", "x", "--scale-shift"]))
    assert cfg.model_overrides == {"scale_shift": True}
    model = UNet(UNetConfig(in_channels=3, scale_shift=True, **TINY))
    x = torch.randn(2, 3, 8, 8)
    assert model(x, torch.tensor([0, 999])).shape == x.shape


def test_bad_configs_are_named():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")
    with pytest.raises(ConfigError, match="attention_levels"):
        UNetConfig(channel_mults=(1, 2), attention_levels=(5,))
    with pytest.raises(ConfigError, match="norm_groups"):
        UNetConfig(base_channels=20, norm_groups=32)
    with pytest.raises(ValueError, match="divisible"):
        UNet(UNetConfig(in_channels=1, **TINY))(torch.randn(1, 1, 7, 8), torch.tensor([0]))


def test_attention_levels_none_leaves_the_middle_blocks_attention_alone(capsys):
    from ddpm.cli import build_parser
    from ddpm.cli.train import config_from_args

    argv = ["train", "--data", "x", "--attention-levels", "none"]
    cfg = config_from_args(build_parser().parse_args(argv))
    assert cfg.model_overrides == {"attention_levels": ()}
    model = UNet(UNetConfig(in_channels=3, **{**TINY, "attention_levels": ()}))
    attentions = [m for m in model.modules() if m.__class__.__name__ == "Attention"]
    assert attentions == [model.mid_attn]
    x = torch.randn(2, 3, 8, 8)
    assert model(x, torch.tensor([0, 999])).shape == x.shape
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--attention-levels", "nonee"])
    assert "integers >= 0 or none, got 'nonee'" in capsys.readouterr().err
