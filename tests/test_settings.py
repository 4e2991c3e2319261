"""Each training setting is declared once (ddpm.train.config.TrainConfig): its flag is generated
from the declaration, with the same default, and its rule refuses a bad value both as a flag
and at construction. Checkpoints written with settings since removed still resume."""

import shutil

import pytest

from ddpm.cli import build_parser, main
from ddpm.errors import ConfigError
from ddpm.train import TrainConfig
from ddpm.train.settings import settings_of
from test_before_layout import BEFORE, TRAIN, images, losses


def train_parser():
    return build_parser().commands["train"]


def test_every_setting_with_a_group_has_its_flag_with_the_same_default():
    actions = {a.dest: a for a in train_parser()._actions}
    declared = settings_of(TrainConfig)
    for name, (field, s) in declared.items():
        if s.group.title is None:
            assert name not in actions, f"{name} has a flag but no group"
            continue
        action = actions[name]
        assert action.default == field.default, name
        assert action.help == s.help or action.help.startswith(s.help), name
    assert {"sample_sampler", "picture_budget"} <= set(declared)  # settings without flags


@pytest.mark.parametrize(
    "name, value, flag",
    [
        ("steps", 0, "--steps"),
        ("cond_drop", 1.0, "--cond-drop"),
        ("ema_extra", (0.5,), "--ema-extra"),
        ("snapshot_minutes", (-1.0,), "--snapshot-minutes"),
        ("lr_decay", "linear", "--lr-decay"),
    ],
)
def test_a_rule_refuses_the_value_as_a_flag_and_at_construction(name, value, flag, capsys):
    with pytest.raises(ConfigError, match=f"{flag} must be"):  # named by its flag
        TrainConfig(**{name: value})
    text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    with pytest.raises(SystemExit) as e:
        main(["train", f"{flag}={text}"])
    assert e.value.code == 2
    assert f"argument {flag}: " in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag",
    [
        "--compile-scope=blocks",
        "--ddp-static-graph",
        "--no-ddp-grad-as-bucket-view",
        "--ddp-split-graph",
    ],
)
def test_the_options_measured_never_to_help_are_gone(flag, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", flag])
    assert e.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_a_checkpoint_with_the_removed_settings_resumes(tmp_path):
    """The recorded checkpoint's train_config holds compile_scope and the DDP options since
    removed; resuming it trains on from its step."""
    import torch

    saved = torch.load(BEFORE / "ckpt-0000006.pt", weights_only=False)["train_config"]
    assert {"compile_scope", "ddp_static_graph", "ddp_split_graph"} <= set(saved)
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(BEFORE / "ckpt-0000006.pt", out / "ckpt-0000006.pt")
    argv = [*TRAIN, "--data", str(images(tmp_path / "data")), "--out", str(out)]
    steps = argv.index("--steps") + 1
    argv[steps] = "8"
    assert main([*argv, "--resume"]) == 0
    assert (out / "ckpt-0000008.pt").is_file()
    assert len(losses(out / "log.csv")) == 2  # steps 7 and 8
