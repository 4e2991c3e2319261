"""The training-quality levers of issue 9 and the recipes: timestep distributions, loss
weightings, power-function EMAs, time snapshots, epochs, and `--recipe`."""

import dataclasses
import math
import shlex

import pytest
import torch

from ddpm.cli import build_parser, main
from ddpm.cli.train import apply_recipe, config_from_args
from ddpm.data.images import ImageDataset
from ddpm.diffusion import process as D
from ddpm.diffusion.schedule import make_schedule
from ddpm.diffusion.timesteps import LogNormalTimesteps, UniformTimesteps
from ddpm.errors import ConfigError
from ddpm.models.layers import ResBlock
from ddpm.models.presets import PRESETS, build_model
from ddpm.sampling.loaded import load_model
from ddpm.train import EMA, TrainConfig, train
from ddpm.train.config import power_ema_beta, power_ema_exponent
from ddpm.train.recipes import RECIPES, Recipe, for_batch, sampling_advice


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("linear", 1000)


def test_uniform_timesteps_draw_what_randint_drew(schedule):
    """The default sampler keeps the random stream of earlier runs (exact resumes, old seeds)."""
    t, w = UniformTimesteps(schedule).sample(64, torch.Generator().manual_seed(3), "cpu")
    assert w is None
    assert torch.equal(t, torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(3)))


def test_lognormal_timesteps_have_the_asked_moments_of_log_sigma(schedule):
    sampler = LogNormalTimesteps(schedule, mean=-1.2, std=1.2)
    assert sampler.probs.sum().item() == pytest.approx(1.0, abs=1e-6)
    t, w = sampler.sample(200_000, torch.Generator().manual_seed(0), "cpu")
    assert w is None and t.min() >= 0 and t.max() < 1000
    ls = schedule.log_sigmas[t]
    # rounding to the grid (spacing << std in the bulk) barely moves the moments
    assert ls.mean().item() == pytest.approx(-1.2, abs=0.03)
    assert ls.std().item() == pytest.approx(1.2, abs=0.03)
    # and almost nothing is spent near pure noise, where uniform t spends 40%
    assert (ls > math.log(10)).float().mean().item() < 0.01


def test_weightings_are_the_same_x0_weight_for_every_target(schedule):
    """A weighting is defined on the x_0 error; whatever the regressed target, its weight over
    the target->x_0 error factor (1/SNR for eps, 1/(SNR+1) for v, 1 for x0) is the same."""
    t = torch.arange(0, 1000, 37)
    snr = D.snr(schedule, t)
    factor = {"eps": 1 / snr, "v": 1 / (snr + 1), "x0": torch.ones_like(snr)}
    for weighting, gamma in (("edm", None), ("min-snr", 5.0)):
        w_x0 = {p: D.loss_weights(schedule, t, p, gamma, weighting) / factor[p] for p in factor}
        assert torch.allclose(w_x0["eps"], w_x0["v"]) and torch.allclose(w_x0["eps"], w_x0["x0"])
    sigma2 = 1 / snr
    edm_eps = D.loss_weights(schedule, t, "eps", None, "edm", sigma_data=0.5)
    assert torch.allclose(edm_eps, 1 + sigma2 / 0.25)  # Karras et al.'s λ(σ) σ²
    assert D.loss_weights(schedule, t, "eps", None, "none") is None


def test_power_ema_exponent_solves_edm2s_equation():
    for sigma_rel in (0.05, 0.1, 0.2):
        g = power_ema_exponent(sigma_rel)
        assert (g + 1) / ((g + 2) ** 2 * (g + 3)) == pytest.approx(sigma_rel**2, rel=1e-9)
    assert power_ema_exponent(0.05) > power_ema_exponent(0.1) > power_ema_exponent(0.2) > 0
    with pytest.raises(ValueError):
        power_ema_exponent(0.3)


@pytest.mark.parametrize("sigma_rel", [0.05, 0.15])
def test_a_power_ema_averages_a_fixed_share_of_the_run(sigma_rel):
    """Run the recursion on impulses: the weights the average gives to steps 1..t have a
    standard deviation of σ_rel * t, at any t: the EMA's effective length grows with the run."""
    for T in (2_000, 20_000):
        w = torch.zeros(T, dtype=torch.float64)
        for s in range(1, T + 1):  # ema = beta ema + (1 - beta) x_s, with x_s = onehot(s)
            b = power_ema_beta(sigma_rel, s)
            w[: s - 1] *= b
            w[s - 1] = 1 - b
        steps = torch.arange(1, T + 1, dtype=torch.float64)
        mean = (w * steps).sum() / w.sum()
        std = ((w * (steps - mean) ** 2).sum() / w.sum()).sqrt()
        assert w.sum().item() == pytest.approx(1.0, abs=1e-9)
        assert std.item() / T == pytest.approx(sigma_rel, rel=0.02)


def test_ema_with_weight_one_copies_and_zero_keeps():
    net = torch.nn.Linear(3, 2)
    ema = EMA(net)
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net, torch.tensor(0.0))
    assert not torch.equal(ema.model.weight, net.weight)
    ema.update(net, torch.tensor(1.0))
    assert torch.equal(ema.model.weight, net.weight)


def tiny_cfg(tmp_path, **kw):
    base = dict(
        preset="tiny",
        image_size="8",
        steps=6,
        batch_size=8,
        log_every=3,
        sample_every=100,
        checkpoint_every=100,
        num_samples=4,
        sample_steps=2,
        out=str(tmp_path / "run"),
    )
    return TrainConfig(**{**base, **kw})


def test_snapshots_extra_emas_and_epochs(tmp_path, tiny_preset):
    images = torch.randint(0, 256, (40, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    data = ImageDataset(images.to(torch.uint8), source="random")
    cfg = tiny_cfg(
        tmp_path,
        steps=1000,
        epochs=2,
        t_sampling="lognormal",
        loss_weight="edm",
        ema_sigma_rel=0.1,
        ema_extra=(0.05, 0.2),
        snapshot_minutes=(1e-6,),
    )
    result = train(cfg, data=data, progress=False)
    assert result.step == 2 * (40 // 8)  # two passes over the data
    snap = tmp_path / "run" / "snapshot-1e-06min.pt"
    assert snap.is_file()
    for ema in (None, "0.05", "0.2"):
        loaded = load_model(snap, ema=ema)
        assert loaded.shape == (1, 8, 8)
    a, b = (load_model(result.last_checkpoint, ema=e).model for e in ("0.05", "0.2"))
    assert not torch.equal(a.conv_out.weight, b.conv_out.weight)  # different lengths
    from ddpm.errors import CheckpointError

    with pytest.raises(CheckpointError, match="no EMA '0.1'.*0.05, 0.2"):
        load_model(result.last_checkpoint, ema="0.1")


def parse_train(argv):
    parser = build_parser()
    apply_recipe(parser.commands["train"], argv)
    return config_from_args(parser.parse_args(argv))


def test_recipe_tutorial_sets_exactly_the_tutorials_values():
    cfg = parse_train(["train", "--recipe", "tutorial", "--data", "stanford-cars:x.zip"])
    expected = dict(
        preset="tutorial",
        schedule="linear",
        T=300,
        beta_start=1e-4,
        beta_end=0.02,
        loss="l1",
        prediction="eps",
        lr=1e-3,
        warmup=0,
        lr_decay="constant",
        weight_decay=0.0,  # AdamW without decay is Adam
        grad_clip=0.0,
        ema_decay=0.0,
        batch_size=128,
        epochs=100.0,
        image_size="64",
        resize="squash",
        hflip=True,
        sample_sampler="ddpm",
    )
    assert {k: getattr(cfg, k) for k in expected} == expected
    assert cfg.data == "stanford-cars:x.zip"


def test_flags_given_beside_a_recipe_win():
    cfg = parse_train(["train", "--recipe", "cifar10-8min", "--lr", "3e-4", "--max-minutes", "2"])
    assert cfg.lr == 3e-4 and cfg.max_minutes == 2.0
    assert cfg.preset == RECIPES["cifar10-8min"].settings["preset"]
    plain = parse_train(["train"])
    assert plain.lr == TrainConfig().lr and plain.preset == TrainConfig().preset


def test_another_loss_weighting_takes_the_recipes_min_snr_gamma_with_it():
    edm = parse_train(["train", "--recipe", "cifar10-8min", "--loss-weight", "edm"])
    assert edm.loss_weight == "edm" and edm.min_snr_gamma is None
    assert parse_train(["train", "--recipe", "cifar10-8min"]).min_snr_gamma == 5.0
    kept = ["train", "--recipe", "cifar10-8min", "--loss-weight", "min-snr"]
    assert parse_train(kept).min_snr_gamma == 5.0
    hybrid = ["train", "--recipe", "cifar10-8min", "--loss", "hybrid", "--learn-sigma"]
    with pytest.warns(UserWarning, match="loss hybrid"):  # --loss is not --loss-weight
        assert parse_train(hybrid).min_snr_gamma == 5.0
    with pytest.raises(ConfigError, match="--min-snr-gamma"):  # both given: a real conflict
        parse_train(
            ["train", "--recipe", "cifar10-8min", "--loss-weight", "edm", "--min-snr-gamma", "3"]
        )


@pytest.mark.parametrize(
    "processes, batch, lr, warmup, log_every",
    [(1, 128, 4e-4, 500, 250), (2, 256, 5.657e-4, 250, 125), (4, 512, 8e-4, 125, 62),
     (8, 1024, 1.131e-3, 62, 31)],
)  # fmt: skip
def test_cifar10_8min_follows_the_number_of_processes(
    monkeypatch, processes, batch, lr, warmup, log_every
):
    for name, value in {"WORLD_SIZE": processes, "RANK": 0, "LOCAL_RANK": 0}.items():
        monkeypatch.setenv(name, str(value))
    cfg = parse_train(["train", "--recipe", "cifar10-8min"])
    assert (cfg.batch_size, cfg.warmup, cfg.log_every) == (batch, warmup, log_every)
    assert cfg.lr == pytest.approx(lr, rel=1e-3)
    # a power-function EMA's length is a share of the run, the snapshots are in minutes
    assert (cfg.ema_sigma_rel, cfg.ema_extra) == (0.1, (0.2,))
    assert cfg.snapshot_minutes == (1.0, 2.0, 4.0, 8.0) and cfg.max_minutes == 8.0
    # the rule follows the global batch, however it came: one process at 128 x processes
    monkeypatch.delenv("WORLD_SIZE")
    alone = parse_train(["train", "--recipe", "cifar10-8min", "--batch-size", str(batch)])
    assert dataclasses.asdict(alone) == dataclasses.asdict(cfg)
    # and a flag given beside it wins over the rule
    assert parse_train(["train", "--recipe", "cifar10-8min", "--lr", "1e-4"]).lr == 1e-4


def test_a_per_step_ema_decay_keeps_its_half_life_in_images_at_another_batch():
    base = {"batch_size": 64, "lr": 1e-3, "ema_decay": 0.999, "warmup": 3}
    twice = for_batch(base, 128)
    assert twice["ema_decay"] == pytest.approx(base["ema_decay"] ** 2)
    assert (twice["warmup"], twice["lr"]) == (2, pytest.approx(1e-3 * math.sqrt(2)))
    assert for_batch(base, 64) == base
    # the other recipes, measured at their batch on one GPU, keep it under torchrun
    assert not RECIPES["tutorial"].scales_with_batch


def test_no_compile_undoes_a_recipes_compile():
    assert parse_train(["train", "--recipe", "cars64-fast"]).compile
    assert not parse_train(["train", "--recipe", "cars64-fast", "--no-compile"]).compile
    assert parse_train(["train", "--compile"]).compile and not parse_train(["train"]).compile


def test_cars64_2min_is_cars64_fast_with_one_residual_block_a_level():
    fast, short = PRESETS["cars64-fast"], PRESETS["cars64-2min"]
    assert {**fast.config, "num_res_blocks": 1} == short.config
    assert fast.image_size == short.image_size == (64, 64)
    blocks = {}
    for name in ("cars64-fast", "cars64-2min"):
        model = build_model("unet", {**PRESETS[name].config, "in_channels": 3})
        blocks[name] = sum(isinstance(m, ResBlock) for m in model.modules())
    # per level: n on the way down, n + 1 on the way up (4 levels), and 2 in the middle
    assert blocks == {"cars64-fast": 4 * 2 + 4 * 3 + 2, "cars64-2min": 4 * 1 + 4 * 2 + 2}


def test_the_cifar10_8min_network_is_hos_with_one_block_a_level_and_adaptive_norm():
    ho, fast = PRESETS["ddpm-cifar10"], PRESETS["cifar10-8min"]
    changes = {"num_res_blocks": 1, "scale_shift": True, "dropout": 0.0}
    assert {**ho.config, **changes} == fast.config
    model = build_model("unet", {**fast.config, "in_channels": 3})
    assert sum(p.numel() for p in model.parameters()) == 25_917_187  # as the H100 run printed
    assert parse_train(["train", "--recipe", "cifar10-8min"]).preset == "cifar10-8min"


def test_recipe_cars64_2min_changes_only_the_network_batch_time_and_sampler_of_cars64_fast():
    fast = vars(parse_train(["train", "--recipe", "cars64-fast"]))
    short = vars(parse_train(["train", "--recipe", "cars64-2min"]))
    changed = {k: short[k] for k in fast if fast[k] != short[k]}
    assert changed == dict(
        preset="cars64-2min",
        resize="squash",
        batch_size=64,
        max_minutes=2.15,
        sample_sampler="ddpm",
        sample_steps=100,
    )


def test_every_recipe_makes_a_valid_config_with_its_own_values():
    for name, recipe in RECIPES.items():
        cfg = vars(parse_train(["train", "--recipe", name]))
        for key, value in recipe.settings.items():  # each setting arrives, as its flag's type
            got = cfg[key]
            assert got == value or str(got) == str(value) or list(got) == list(value), (name, key)


def test_the_recipe_says_how_to_sample_it_once_its_checkpoints_exist(tmp_path):
    out = tmp_path / "my runs"  # a space: the flags are quoted for the shell
    out.mkdir()
    assert sampling_advice("cifar10-8min", out, 8.0) is None  # nothing written yet
    (out / "snapshot-8min.pt").touch()
    assert sampling_advice("cifar10-8min", out, 8.0) is None  # the guide is missing
    (out / "snapshot-4min.pt").touch()
    flags = sampling_advice("cifar10-8min", out, 8.0)
    args = build_parser().parse_args(["sample", *shlex.split(flags)])
    assert (args.checkpoint, args.guide_model) == (
        out / "snapshot-8min.pt",
        out / "snapshot-4min.pt",
    )
    assert (args.guidance, args.sampler, args.steps) == (1.5, "dpm-solver-3m", 25)
    assert sampling_advice("cifar10-8min", out, 4.0) is None  # other minutes, other shares
    assert (
        sampling_advice(None, out, 8.0) is None and sampling_advice("tutorial", out, None) is None
    )


def test_training_ends_with_the_recipes_sampling_and_it_runs(
    tmp_path, tiny_preset, monkeypatch, capsys
):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (8, 8), (30 * i, 0, 0)).save(folder / f"{i}.png")
    settings = {"preset": "tiny", "image_size": "8", "T": 40, "steps": 3, "batch_size": 4}
    guided = "--checkpoint {out}/ckpt-0000003.pt --guide-model {out}/ckpt-0000002.pt --guidance 1"
    monkeypatch.setitem(RECIPES, "tiny", Recipe("a tiny run", settings, guided))
    run = tmp_path / "run"
    argv = ["train", "--recipe", "tiny", "--data", str(folder), "--out", str(run), "--quiet"]
    assert main([*argv, "--checkpoint-every", "1", "--sample-every", "100"]) == 0
    said = capsys.readouterr().out.splitlines()[-1]
    prefix = "sample it as measured best (docs/benchmarks.md): ddpm sample "
    assert said.startswith(prefix)
    grid = tmp_path / "g.png"  # no --steps: a model of T = 40 takes 40, not the usual 50
    assert main(["sample", *shlex.split(said[len(prefix) :]), "--n", "4", "--out", str(grid)]) == 0
    assert grid.exists()
