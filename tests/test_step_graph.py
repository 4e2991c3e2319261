"""The training step as one CUDA graph (ddpm.train.step.StepGraph): its bookkeeping on the CPU
(static inputs, rates as tensors, the step count), and the captured graph on CUDA (-m gpu)."""

import pytest
import torch

from conftest import tiny_config
from ddpm import speed
from ddpm.data.stream import batches
from ddpm.train import train
from ddpm.train.config import build_schedule
from ddpm.train.state import setup
from ddpm.train.step import StepGraph, step_graph_unavailable, train_step

pytestmark = pytest.mark.usefixtures("tiny_preset")


def config(tmp_path, **kw):
    """tiny_config with both kinds of EMA and a loss weighting: every rate a step takes."""
    rates = dict(ema_sigma_rel=0.1, ema_extra=(0.2,), loss_weight="min-snr", min_snr_gamma=5.0)
    return tiny_config(tmp_path, **{"warmup": 3, **rates, **kw})


def run_steps(cfg, blobs, device, n, graphed, capture=False, nan_at=(), compiled=False):
    """n steps from the same seed, by train_step or by a StepGraph; the state afterwards."""
    _, data, _, _, state = setup(cfg, blobs, device=device)
    if compiled:  # as the loop compiles the model for a step graph
        assert speed.compile_model(state.model, device, "default")
    schedule = build_schedule(cfg).to(device)
    stream = batches(data, cfg.batch_size, cfg.seed, 0, device, hflip=True)
    step = StepGraph(state, schedule, cfg, False, device, capture=capture) if graphed else None
    losses = []
    for k in range(n):
        x_0, y = next(stream)
        if k in nan_at:
            x_0 = x_0 * float("nan")
        loss, ok = step(x_0, y) if step else train_step(state, schedule, cfg, x_0, y, False)
        losses.append(float(loss) if bool(ok) else float("nan"))
        state.time_fraction = (k + 1) / (2 * n)  # as a time-limited run's decay moves on
    return state, losses


def same_weights(a, b, **tol):
    pairs = [(a.model, b.model), (a.ema.model, b.ema.model)]
    pairs += [(a.extra_emas[s].model, b.extra_emas[s].model) for s in a.extra_emas]
    for m, n in pairs:
        for p, q in zip(m.parameters(), n.parameters(), strict=True):
            torch.testing.assert_close(p, q, **tol)


def test_a_step_graph_without_capture_trains_as_train_step_does(tmp_path, blobs):
    """Its static inputs, rate tensors (learning rate, both EMAs' weights) and step count give
    the plain steps' losses and weights, warm-up and time-limited decay included."""
    cfg = config(tmp_path, lr_decay="cosine", max_minutes=1.0)
    cpu = torch.device("cpu")
    plain, plain_losses = run_steps(cfg, blobs, cpu, 8, graphed=False)
    graphed, graphed_losses = run_steps(cfg, blobs, cpu, 8, graphed=True)
    assert graphed.step == plain.step == 8
    assert graphed_losses == pytest.approx(plain_losses, rel=1e-5)
    same_weights(plain, graphed, rtol=1e-5, atol=1e-6)
    moved = [
        not torch.equal(p, q)
        for p, q in zip(plain.ema.model.parameters(), graphed.model.parameters())
    ]
    assert any(moved)  # the EMA is not the model: its weights were really compared


def test_a_step_graph_skips_a_non_finite_step_like_train_step(tmp_path, blobs):
    cfg = config(tmp_path)
    cpu = torch.device("cpu")
    plain, losses = run_steps(cfg, blobs, cpu, 5, graphed=False, nan_at={2})
    graphed, graphed_losses = run_steps(cfg, blobs, cpu, 5, graphed=True, nan_at={2})
    assert losses[2] != losses[2] and graphed_losses[2] != graphed_losses[2]  # NaN: skipped
    same_weights(plain, graphed, rtol=1e-5, atol=1e-6)


def test_where_a_step_graph_cannot_run_it_says_why(tmp_path):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert step_graph_unavailable(config(tmp_path), cuda, 1) is None
    assert "CUDA" in step_graph_unavailable(config(tmp_path), cpu, 1)
    assert "DDP" in step_graph_unavailable(config(tmp_path), cuda, 2)
    vlb = config(tmp_path, loss="vlb", learn_sigma=True, loss_weight="none", min_snr_gamma=None)
    assert "importance" in step_graph_unavailable(vlb, cuda, 1)
    student = config(tmp_path, distill_from=str(tmp_path / "teacher.pt"), distill_steps=4)
    assert "distillation" in step_graph_unavailable(student, cuda, 1)


def test_inside_a_step_graph_the_model_compiles_without_graphs_of_its_own():
    assert speed.without_cudagraphs("reduce-overhead") == "default"
    assert speed.without_cudagraphs("max-autotune") == "max-autotune-no-cudagraphs"
    assert speed.without_cudagraphs("default") == "default"
    for mode in speed.COMPILE_MODES:
        assert not speed.uses_cudagraphs(speed.without_cudagraphs(mode))


def test_step_graph_on_the_cpu_is_ignored_quietly_as_channels_last_is(tmp_path, blobs):
    """A recipe that asks for it (cifar10-8min) trains on the CPU without a word about it."""
    import warnings

    cfg = config(tmp_path, step_graph=True, steps=6, log_every=3, sample_every=1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(cfg, data=blobs, progress=False)
    assert result.step == 6
    assert not [w for w in caught if "step-graph" in str(w.message)]


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("compiled", [False, True])
def test_a_captured_step_graph_trains_as_eager_steps_do(tmp_path, blobs, compiled):
    """On CUDA: 3 eager warm-up steps, a capture, then replays, against plain steps from the
    same seed (the same noise: the generator is registered with the graph)."""
    cfg = config(tmp_path)
    device = torch.device("cuda")
    plain, plain_losses = run_steps(cfg, blobs, device, 10, graphed=False)
    graphed, graphed_losses = run_steps(
        cfg, blobs, device, 10, graphed=True, capture=True, compiled=compiled
    )
    assert graphed.step == 10
    assert graphed_losses == pytest.approx(plain_losses, rel=1e-3)
    same_weights(plain, graphed, rtol=1e-3, atol=1e-4)


def test_a_step_graph_run_checkpoints_numbers_and_restores(tmp_path, blobs):
    """Its learning rates are device tensors; the checkpoint stores them as numbers, loads
    without executing code and restores the step and the weights."""
    from ddpm.io import checkpoint as C
    from ddpm.train.state import checkpoint_dict, restore

    cfg = config(tmp_path)
    cpu = torch.device("cpu")
    graphed, _ = run_steps(cfg, blobs, cpu, 4, graphed=True)
    assert isinstance(graphed.optimizer.param_groups[0]["lr"], torch.Tensor)
    _, _, arch, model_cfg, resumed = setup(cfg, blobs, device=cpu)
    path = tmp_path / "ckpt.pt"
    C.atomic_save(checkpoint_dict(graphed, cfg, arch, model_cfg), path)
    ckpt = torch.load(path, weights_only=True)
    assert all(type(g["lr"]) is float for g in ckpt["optimizer"]["param_groups"])
    restore(resumed, ckpt, arch, model_cfg, path)
    assert resumed.step == 4
    for p, q in zip(resumed.model.parameters(), graphed.model.parameters(), strict=True):
        assert torch.equal(p, q)
