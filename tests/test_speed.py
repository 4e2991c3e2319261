"""The speed features compute the same function as the plain path (ddpm.speed).

CPU tests: channels-last, the token-layout attention, compile vs eager (slow), the compile
fallback, config validation. GPU tests (-m gpu): no host sync inside a training step, the
data stream or a sampling step, and bf16 + channels-last + compile close to fp32.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_UNET
from ddpm import speed
from ddpm.diffusion.schedule import make_schedule
from ddpm.diffusion.timesteps import make_timestep_sampler
from ddpm.errors import ConfigError
from ddpm.models.layers import Attention
from ddpm.models.tutorial_unet import TutorialUNet, TutorialUNetConfig
from ddpm.models.unet import UNet, UNetConfig
from ddpm.sampling.generate import generate
from ddpm.sampling.loaded import Loaded, speed_up
from ddpm.sampling.samplers import ddim_sample, ddpm_sample
from ddpm.train import EMA, TrainConfig, TrainState, make_optimizer, train_step

TINY = TINY_UNET


def tiny_unet(seed: int = 0, **overrides) -> UNet:
    torch.manual_seed(seed)
    model = UNet(UNetConfig(in_channels=3, **{**TINY, **overrides}))
    for p in model.parameters():  # zero-initialised layers would hide differences
        torch.nn.init.normal_(p, std=0.1)
    return model.eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).norm() / b.detach().double().norm())


@pytest.mark.parametrize("heads", [1, 2])
def test_attention_equals_softmax_attention_written_out(heads):
    """The token-layout attention is softmax(q kᵀ/√d) v over positions, per head, plus x."""
    torch.manual_seed(heads)
    attn = Attention(16, heads, 4).double()
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 16, 3, 5, dtype=torch.float64)
    B, C, H, W = x.shape
    d = C // heads
    h = attn.norm(x).reshape(B, C, H * W)  # (B, C, N)
    qkv = torch.einsum("oc,bcn->bon", attn.qkv.weight[:, :, 0, 0], h) + attn.qkv.bias[:, None]
    q, k, v = qkv.reshape(B, 3, heads, d, H * W).unbind(1)  # each (B, heads, d, N)
    weights = torch.softmax(torch.einsum("bhdn,bhdm->bhnm", q, k) / math.sqrt(d), dim=-1)
    out = torch.einsum("bhnm,bhdm->bhdn", weights, v).reshape(B, C, H * W)
    proj = torch.einsum("oc,bcn->bon", attn.proj.weight[:, :, 0, 0], out) + attn.proj.bias[:, None]
    expected = x + proj.reshape(B, C, H, W)
    assert rel_err(attn(x), expected) < 1e-12


def test_channels_last_gives_the_same_outputs_and_gradients():
    model = tiny_unet()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([3, 700])
    ref = model(x, t)
    ref.square().mean().backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    speed.use_channels_last(model)
    assert model.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    out = model(x.contiguous(memory_format=torch.channels_last), t)
    out.square().mean().backward()
    assert rel_err(out, ref) < 1e-5
    for p, g in zip(model.parameters(), ref_grads):
        assert rel_err(p.grad, g) < 1e-4


def test_channels_last_tutorial_model_and_state_dict_round_trip():
    torch.manual_seed(0)
    model = TutorialUNet(TutorialUNetConfig(channels=(8, 16, 32), time_dim=8)).eval()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    ref = model(x, t)
    state = {k: v.clone() for k, v in speed.use_channels_last(model).state_dict().items()}
    assert rel_err(model(x, t), ref) < 1e-5
    fresh = TutorialUNet(TutorialUNetConfig(channels=(8, 16, 32), time_dim=8)).eval()
    fresh.load_state_dict(state)  # a channels-last checkpoint loads into a plain model
    assert rel_err(fresh(x, t), ref) < 1e-5


@pytest.mark.slow
def test_compiled_model_matches_eager_and_keeps_parameter_names():
    if speed.compile_unavailable("cpu") is not None:
        pytest.skip(speed.compile_unavailable("cpu"))
    model = tiny_unet()
    names = [n for n, _ in model.named_parameters()]
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 900])
    ref = model(x, t)
    assert speed.compile_model(model, "cpu")
    assert [n for n, _ in model.named_parameters()] == names  # the EMA pairing holds
    assert rel_err(model(x, t), ref) < 1e-5


def test_training_compiles_the_whole_model():
    with pytest.raises(TypeError, match="compile_scope"):  # regional compilation is gone
        TrainConfig(compile_scope="blocks")


def test_compile_falls_back_to_eager_with_a_warning(monkeypatch):
    monkeypatch.setattr(speed, "compile_unavailable", lambda device: "no compiler here")
    model = tiny_unet()
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([5])
    ref = model(x, t)
    with pytest.warns(UserWarning, match="no compiler here"):
        assert speed.compile_model(model, "cpu") is False
    assert torch.equal(model(x, t), ref)


def test_compile_mode_is_validated_and_named():
    with pytest.raises(ConfigError, match="--compile-mode"):
        TrainConfig(compile_mode="fastest")
    with pytest.raises(ConfigError, match="compile_mode"):
        speed.compile_model(tiny_unet(), "cpu", "fastest")
    assert TrainConfig(compile=True, compile_mode="reduce-overhead", channels_last=True)
    assert speed.uses_cudagraphs("reduce-overhead") and not speed.uses_cudagraphs("default")


def test_speed_up_is_a_no_op_on_the_cpu():
    """bf16 and channels-last apply on CUDA only, so CPU samples stay bit-identical."""
    model = tiny_unet()
    schedule = make_schedule("linear", 100)
    loaded = Loaded(model, schedule, "eps", (3, 8, 8), 0)
    ref = generate(loaded, 3, seed=1, sampler="ddim", steps=5)
    fast = speed_up(loaded, bf16=True, channels_last=True)
    assert fast.bf16 is False
    assert not model.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(generate(fast, 3, seed=1, sampler="ddim", steps=5), ref)
    assert speed.autocast_call(model, "cpu") is model


# --- GPU ----------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def count_syncs(fn) -> int:
    """Host-device synchronisations that `fn` makes (torch's sync debug mode, as warnings)."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message).lower()]
    for message in syncs:
        print("sync:", message[:300])
    return len(syncs)


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(
    "channels_last",
    [
        pytest.param(
            False,
            marks=pytest.mark.xfail(
                reason="H100, torch 2.11, 2026-11-26: the NCHW path still showed a sync; the "
                "channels-last path (what --channels-last trains with) showed none",
                strict=False,
            ),
        ),
        True,
    ],
)
def test_training_steps_make_no_host_sync(channels_last):
    device = torch.device("cuda")
    model = tiny_unet().train().to(device)
    if channels_last:
        speed.use_channels_last(model)
    cfg = TrainConfig(batch_size=4, warmup=2)
    state = TrainState(
        model, EMA(model), make_optimizer(cfg, model, device),
        torch.Generator(device=device).manual_seed(0), (3, 8, 8),
    )  # fmt: skip
    schedule = make_schedule("linear", 100).to(device)
    x = torch.randn(4, 3, 8, 8, device=device)
    for _ in range(3):  # first steps: optimizer state, cuDNN plans, lazy handles
        train_step(state, schedule, cfg, x, None, True)
    assert count_syncs(lambda: [train_step(state, schedule, cfg, x, None, True) for _ in "ab"]) == 0


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("loss", ["hybrid", "vlb"])
def test_learned_variance_steps_make_no_host_sync(loss):
    """The hybrid / vlb loss and the importance sampler (history, warm-up check, draws) stay on
    the device; T = 10 so that the sampler is warmed up before the counted steps."""
    device = torch.device("cuda")
    model = UNet(UNetConfig(in_channels=3, learn_sigma=True, **TINY_UNET)).train().to(device)
    speed.use_channels_last(model)
    cfg = TrainConfig(batch_size=64, warmup=2, T=10, loss=loss, learn_sigma=True,
                      t_sampling="importance")  # fmt: skip
    state = TrainState(
        model, EMA(model), make_optimizer(cfg, model, device),
        torch.Generator(device=device).manual_seed(0), (3, 8, 8),
    )  # fmt: skip
    schedule = make_schedule("linear", 10).to(device)
    state.timesteps = make_timestep_sampler("importance", schedule)
    x = torch.randn(64, 3, 8, 8, device=device)
    for _ in range(6):  # 384 uniform draws: every t has its 10 values with near certainty
        train_step(state, schedule, cfg, x, None, True)
    assert bool((state.timesteps.seen[:10] >= 10).all())
    assert count_syncs(lambda: [train_step(state, schedule, cfg, x, None, True) for _ in "ab"]) == 0


@pytest.mark.gpu
@cuda
def test_data_stream_makes_no_host_sync():
    from ddpm.data.images import ImageDataset
    from ddpm.data.stream import batches

    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    stream = batches(ImageDataset(images), 8, seed=0, device="cuda", hflip=True)
    next(stream)  # moves the dataset to the GPU once
    assert count_syncs(lambda: [next(stream) for _ in range(8)]) == 0  # crosses an epoch


@pytest.mark.gpu
@cuda
def test_samplers_make_no_host_sync_per_step():
    device = torch.device("cuda")
    model = tiny_unet().to(device)
    schedule = make_schedule("linear", 50).to(device)
    x_T = torch.randn(2, 3, 8, 8, device=device)
    ddim_sample(model, schedule, x_T, steps=2, clip=True)
    few = count_syncs(lambda: ddim_sample(model, schedule, x_T, steps=2, clip=True))
    many = count_syncs(lambda: ddim_sample(model, schedule, x_T, steps=25, clip=True))
    assert many == few <= 1  # the schedule is read to the host once, not per step
    gens = [torch.Generator(device=device).manual_seed(i) for i in range(2)]
    assert count_syncs(lambda: ddpm_sample(model, schedule, x_T, clip=True, generator=gens)) == 0


@pytest.mark.gpu
@cuda
def test_respaced_learned_ddpm_makes_no_host_sync_per_step():
    """Respacing reads the schedule once per call (a few syncs), never per step."""
    from ddpm.sampling.samplers import sample

    device = torch.device("cuda")
    model = UNet(UNetConfig(in_channels=3, learn_sigma=True, **TINY_UNET)).to(device).eval()
    schedule = make_schedule("cosine", 100).to(device)
    x_T = torch.randn(2, 3, 8, 8, device=device)
    gens = [torch.Generator(device=device).manual_seed(i) for i in range(2)]

    def run(k):
        return sample("ddpm", model, schedule, x_T, steps=k, variance="learned", generator=gens)

    run(5)
    assert count_syncs(lambda: run(5)) == count_syncs(lambda: run(50))


@pytest.mark.gpu
@cuda
def test_bf16_channels_last_compiled_is_close_to_fp32():
    device = torch.device("cuda")
    model = tiny_unet().to(device)
    x, t = torch.randn(8, 3, 8, 8, device=device), torch.randint(0, 1000, (8,), device=device)
    with torch.no_grad():
        ref = model.double()(x.double(), t).float()
        model.float()
        speed.use_channels_last(model)
        assert speed.compile_model(model, device)
        out = speed.autocast_call(model, device)(x, t).float()
    assert rel_err(out, ref) < 2e-2  # bf16 operands: between 1e-3 and 1e-2 expected
    assert F.mse_loss(out, ref) < 1e-3
