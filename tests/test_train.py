import csv
import types

import pytest
import torch

from conftest import tiny_config
from ddpm.errors import ConfigError
from ddpm.io import checkpoint as C
from ddpm.sampling.loaded import load_model
from ddpm.train import EMA, StopAfter, TrainConfig, train

pytestmark = pytest.mark.usefixtures("tiny_preset")


@pytest.mark.parametrize("prediction", ["eps", pytest.param("v", marks=pytest.mark.slow)])
def test_a_few_hundred_steps_make_the_loss_fall(tmp_path, blobs, prediction):
    cfg = tiny_config(tmp_path, steps=300, log_every=25, prediction=prediction)
    result = train(cfg, data=blobs, progress=False)
    losses = [loss for _, loss in result.losses]
    assert losses[-1] < 0.6 * losses[0], losses
    assert (tmp_path / "run" / "log.csv").exists() and (tmp_path / "run" / "loss.png").exists()


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path, blobs):
    result = train(tiny_config(tmp_path), data=blobs, progress=False)
    ckpt = C.load_checkpoint(result.last_checkpoint)
    assert ckpt["step"] == 20
    loaded = load_model(result.last_checkpoint)
    raw = load_model(result.last_checkpoint, raw_weights=True)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 50, 99])
    # a second load gives the same function, and EMA differs from the raw weights
    again = load_model(result.last_checkpoint)
    assert torch.equal(loaded.model(x, t), again.model(x, t))
    assert not torch.equal(loaded.model(x, t), raw.model(x, t))
    # the file loads under weights_only=True: plain data only
    torch.load(result.last_checkpoint, weights_only=True)


def test_stop_and_resume_equals_an_uninterrupted_run(tmp_path, blobs):
    full = train(tiny_config(tmp_path / "a"), data=blobs, progress=False)
    cfg = tiny_config(tmp_path / "b")
    part = train(cfg, data=blobs, progress=False, hooks=[StopAfter(7)])
    assert part.stopped_early and part.step == 7
    resumed = train(cfg, data=blobs, progress=False, resume="auto")
    assert resumed.step == 20
    a = C.load_checkpoint(full.last_checkpoint)
    b = C.load_checkpoint(resumed.last_checkpoint)
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    assert [l for s, l in full.losses if s > 10] == [l for s, l in resumed.losses if s > 10]


def test_a_new_run_into_a_used_folder_is_refused_and_keeps_the_old_run(tmp_path, blobs):
    first = train(tiny_config(tmp_path, steps=10), data=blobs, progress=False)
    log = (tmp_path / "run" / "log.csv").read_text()
    with pytest.raises(ConfigError, match="already holds a run.*--resume.*--out"):
        train(tiny_config(tmp_path, steps=5), data=blobs, progress=False)
    assert C.load_checkpoint(first.last_checkpoint)["step"] == 10
    assert (tmp_path / "run" / "log.csv").read_text() == log


def test_resume_with_another_shape_is_refused(tmp_path, blobs):
    cfg = tiny_config(tmp_path, steps=5)
    train(cfg, data=blobs, progress=False)
    from ddpm.data.images import ImageDataset

    bigger = ImageDataset(torch.zeros(32, 1, 16, 16, dtype=torch.uint8))
    with pytest.raises(C.CheckpointError, match="shape"):
        train(tiny_config(tmp_path, steps=10), data=bigger, progress=False, resume="auto")


def poison_batches(monkeypatch, steps: set[int]) -> None:
    """The batches of these steps (0-based) become NaN, as a diverging run's losses would: the
    loop's step (ddpm.train.loop.make_step) is wrapped."""
    from ddpm.train import loop

    real = loop.make_step

    def make_step(state, *args, **kwargs):
        step = real(state, *args, **kwargs)

        def poisoned(x_0, y):
            return step(x_0 * float("nan") if state.step in steps else x_0, y)

        return poisoned

    monkeypatch.setattr(loop, "make_step", make_step)


def test_nan_steps_are_skipped_and_counted(tmp_path, blobs, monkeypatch):
    cfg = tiny_config(tmp_path, steps=10, checkpoint_every=100)
    clean = train(tiny_config(tmp_path / "clean", steps=10), data=blobs, progress=False)
    poison_batches(monkeypatch, {3, 4})
    result = train(cfg, data=blobs, progress=False)
    assert result.nonfinite_total == 2
    ckpt = C.load_checkpoint(result.last_checkpoint)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert all(torch.isfinite(v).all() for v in ckpt["ema"].values())
    assert clean.nonfinite_total == 0


def test_too_many_nans_in_a_row_stop_with_the_last_checkpoint_intact(tmp_path, blobs, monkeypatch):
    from ddpm.train import NonFiniteError

    cfg = tiny_config(tmp_path, steps=40, max_nonfinite=5, checkpoint_every=10)
    poison_batches(monkeypatch, set(range(12, 40)))
    with pytest.raises(NonFiniteError, match="consecutive"):
        train(cfg, data=blobs, progress=False)
    found = C.list_checkpoints(tmp_path / "run")
    assert found[-1].name == "ckpt-0000010.pt"
    ckpt = C.load_checkpoint(found[-1])
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_ema_follows_parameters_by_position():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model, 0.5)
    for p, e in zip(model.parameters(), ema.model.parameters()):
        torch.testing.assert_close(e, p - 0.5)
    ema.update(model, torch.tensor(0.0))  # a skipped step leaves the average alone
    for p, e in zip(model.parameters(), ema.model.parameters()):
        torch.testing.assert_close(e, p - 0.5)


@pytest.mark.parametrize(
    "field, value, named",
    [
        ("steps", 0, "--steps"),
        ("batch_size", -1, "--batch-size"),
        ("schedule", "x", "--schedule"),
        ("preset", "nope", "unknown preset"),
        ("lr", 0.0, "--lr"),
        ("channels", 2, "--channels"),
        ("sample_steps", 0, "sample_steps"),  # a setting of the library alone: no flag
        ("adam_beta2", 1.0, "--adam-beta2"),
    ],
)
def test_config_names_the_bad_setting_by_its_flag(field, value, named):
    with pytest.raises(ConfigError, match=named):
        TrainConfig(**{field: value})


@pytest.mark.parametrize(
    "sampler, steps, want",
    [
        ("ddim", None, 50),
        ("ddpm", None, None),  # the whole chain
        ("ddpm", 100, 100),  # a respaced chain, as cars64-2min asks
        ("ddpm", 5000, None),
        ("dpm-solver", 20, 20),
        ("dpm-solver-3m", 20, 20),
        ("ddim", 5000, 1000),
    ],
)
def test_grids_sample_on_the_steps_asked_for(sampler, steps, want):
    from ddpm.train import grid_spec

    cfg = TrainConfig(sample_sampler=sampler, sample_steps=steps)
    assert grid_spec(cfg, 1000).steps == want


def test_a_time_budget_ends_the_run_with_a_checkpoint(tmp_path, blobs):
    cfg = tiny_config(tmp_path, steps=100_000, max_minutes=0.002, checkpoint_every=100_000)
    result = train(cfg, data=blobs, progress=False)
    assert not result.stopped_early and 0 < result.step < 100_000
    assert C.load_checkpoint(result.last_checkpoint)["step"] == result.step


def test_a_time_limited_decay_spans_the_budget_left_after_the_warm_up(tmp_path, blobs, monkeypatch):
    """The first step stands in for a compile that takes half of a 3-second budget: the cosine
    decay starts when the warm-up is over, so the steps after it run at about the full rate
    (they ran at half of it when the decay counted the compile), and still ends near zero.
    The budget reads a clock that each step moves on by a fixed amount (1.5 s the first, 20 ms
    the others), so the result does not depend on how busy the machine is."""
    from ddpm.train import backend, budget

    real, clock = backend.train_step, [0.0]

    def compiling_first(*args, **kwargs):
        clock[0] += 1.5 if clock[0] == 0 else 0.02
        return real(*args, **kwargs)

    monkeypatch.setattr(backend, "train_step", compiling_first)
    monkeypatch.setattr(budget, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    cfg = tiny_config(
        tmp_path,
        steps=100_000,
        max_minutes=0.05,
        warmup=2,
        log_every=1,
        lr_decay="cosine",
        checkpoint_every=100_000,
    )
    train(cfg, data=blobs, progress=False)
    with open(tmp_path / "run" / "log.csv") as f:
        lr = {int(r["step"]): float(r["lr"]) for r in csv.DictReader(f)}
    assert 70 <= max(lr) <= 80  # the budget (3 s) ran out on the fake clock after ~76 steps
    assert lr[4] > 0.9 * cfg.lr, lr[4]
    assert lr[max(lr)] < 0.05 * cfg.lr, lr[max(lr)]


# --- learned variances, the hybrid and vlb losses (Nichol & Dhariwal 2021) ----------------------


@pytest.mark.parametrize(
    "kw, flags",
    [
        (dict(loss="hybrid"), "--loss hybrid.*--learn-sigma"),
        (dict(learn_sigma=True), "--learn-sigma.*--loss"),
        (dict(learn_sigma=True, loss="l1"), "--learn-sigma.*--loss"),
        (dict(loss="vlb", min_snr_gamma=5.0), "--min-snr-gamma.*--loss vlb"),
        (dict(t_sampling="loss-aware"), "--t-sampling"),
        (dict(vlb_weight=0.0), "--vlb-weight"),
    ],
)
def test_meaningless_loss_combinations_are_refused_naming_the_flags(kw, flags):
    with pytest.raises(ConfigError, match=flags):
        TrainConfig(**kw)


def test_the_hybrid_loss_under_a_loss_weighting_warns():
    with pytest.warns(UserWarning, match="--loss hybrid.*--loss-weight"):
        TrainConfig(loss="hybrid", learn_sigma=True, loss_weight="min-snr", min_snr_gamma=5.0)


def test_timestep_sampling_defaults_to_importance_for_vlb_only():
    assert TrainConfig().timestep_sampling == "uniform"
    assert TrainConfig(loss="vlb").timestep_sampling == "importance"
    assert TrainConfig(loss="vlb", t_sampling="uniform").timestep_sampling == "uniform"
    assert TrainConfig(loss="hybrid", learn_sigma=True).timestep_sampling == "uniform"
    TrainConfig(loss="vlb")  # the bound with fixed variances (Ho et al.'s ablation) is allowed


def test_a_learned_sigma_hybrid_model_trains_saves_and_loads(tmp_path, blobs):
    cfg = tiny_config(tmp_path, steps=60, log_every=15, learn_sigma=True, loss="hybrid", T=50)
    result = train(cfg, data=blobs, progress=False)
    losses = [loss for _, loss in result.losses]
    assert losses[-1] < 0.6 * losses[0], losses
    ckpt = C.load_checkpoint(result.last_checkpoint)
    assert ckpt["model_config"]["learn_sigma"] is True
    assert ckpt["train_config"]["loss"] == "hybrid" and ckpt["train_config"]["learn_sigma"]
    loaded = load_model(result.last_checkpoint)
    assert loaded.learn_sigma and loaded.variance() == "learned"
    with torch.no_grad():
        out = loaded.model(torch.randn(2, 1, 8, 8), torch.tensor([3, 40]))
    assert out.shape == (2, 2, 8, 8) and float(out[:, 1:].abs().max()) > 0  # v has moved off 0


def test_vlb_with_importance_sampling_resumes_exactly(tmp_path, blobs):
    """The importance sampler's history is part of the checkpoint: stop at step 12 (after every
    t has its 10 values), resume, and the run is the uninterrupted one bit for bit."""
    kw = dict(T=10, loss="vlb", learn_sigma=True, checkpoint_every=12)
    full = train(tiny_config(tmp_path / "a", **kw), data=blobs, progress=False)
    cfg = tiny_config(tmp_path / "b", **kw)
    part = train(cfg, data=blobs, progress=False, hooks=[StopAfter(12)])
    saved = C.load_checkpoint(part.last_checkpoint)["timesteps"]
    assert bool((saved["seen"][:10] >= 10).all())  # warmed up: t is importance-sampled now
    resumed = train(cfg, data=blobs, progress=False, resume="auto")
    a = C.load_checkpoint(full.last_checkpoint)
    b = C.load_checkpoint(resumed.last_checkpoint)
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert torch.equal(a["timesteps"]["losses"], b["timesteps"]["losses"])


def test_a_checkpoint_from_before_learned_variances_loads_samples_and_resumes(
    tmp_path, blobs, monkeypatch
):
    """Strip what this change added (train_config fields, the sampler state, the tutorial
    config's learn_sigma): the file loads, samples as the current one and resumes."""
    from ddpm.models.presets import PRESETS, ModelSpec
    from ddpm.sampling.generate import generate

    monkeypatch.setitem(
        PRESETS,
        "tiny-tutorial",
        ModelSpec("tutorial", {"channels": [8, 16], "time_dim": 8}, (8, 8)),
    )
    cfg = tiny_config(tmp_path, preset="tiny-tutorial", steps=6, checkpoint_every=3)
    result = train(cfg, data=blobs, progress=False)
    ckpt = C.load_checkpoint(result.last_checkpoint)
    for key in ("learn_sigma", "vlb_weight", "t_sampling"):
        del ckpt["train_config"][key]
    del ckpt["timesteps"], ckpt["model_config"]["learn_sigma"]
    old = tmp_path / "old" / "ckpt-0000006.pt"
    C.atomic_save(ckpt, old)
    new, before = load_model(result.last_checkpoint), load_model(old)
    assert not before.learn_sigma and before.variance() == "small"
    for sampler, steps in (("ddpm", None), ("ddim", 5)):
        assert torch.equal(
            generate(before, 3, sampler=sampler, steps=steps),
            generate(new, 3, sampler=sampler, steps=steps),
        )
    more = train(
        tiny_config(tmp_path, preset="tiny-tutorial", steps=8),
        data=blobs,
        progress=False,
        resume=str(old),
    )
    assert more.step == 8


def test_dropout_zero_fits_a_network_without_dropout_and_more_is_refused():
    from ddpm.data.images import ImageDataset
    from ddpm.train.state import make_model

    data = ImageDataset(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), source="zeros")
    arch, _, _ = make_model(TrainConfig(preset="tutorial", dropout=0.0), data)
    assert arch == "tutorial"  # what a recipe's "dropout 0" asks for, as the network is
    with pytest.raises(ConfigError, match="preset tutorial has no dropout.*--dropout 0.1"):
        make_model(TrainConfig(preset="tutorial", dropout=0.1), data)


def test_adam_beta2_reaches_the_optimizer_from_the_command_line():
    from ddpm.cli import build_parser
    from ddpm.cli.train import config_from_args
    from ddpm.train import make_optimizer

    argv = ["train", "--data", "x", "--adam-beta2", "0.99"]
    cfg = config_from_args(build_parser().parse_args(argv))
    opt = make_optimizer(cfg, torch.nn.Linear(2, 2), torch.device("cpu"))
    assert opt.param_groups[0]["betas"] == (0.9, 0.99)
    default = make_optimizer(TrainConfig(), torch.nn.Linear(2, 2), torch.device("cpu"))
    assert default.param_groups[0]["betas"] == (0.9, 0.999)
    with pytest.raises(SystemExit):  # argparse: "argument --adam-beta2: expected ..."
        build_parser().parse_args(["train", "--adam-beta2", "1"])
