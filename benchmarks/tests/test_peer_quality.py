"""benchmarks/peer_quality.py: the peer's step as one graph (`GraphedStep`, run here without
capture) takes the same steps as diffusers' own loop: its scheduler's learning rates and its
EMAModel's decays reach the graph's tensors, so weights and EMA weights agree."""

import pytest
import torch

from conftest import TINY_UNET2D, load_benchmark

diffusers = pytest.importorskip("diffusers")
from diffusers.optimization import get_cosine_schedule_with_warmup  # noqa: E402
from diffusers.training_utils import EMAModel  # noqa: E402


def peer(seed: int):
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(in_channels=3, out_channels=3, **TINY_UNET2D)
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-2, betas=(0.95, 0.999), weight_decay=1e-6)
    sched = get_cosine_schedule_with_warmup(opt, 2, 6)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, power=3 / 4)
    return unet, opt, sched, ema


def test_the_graphed_step_is_diffusers_step():
    pq = load_benchmark("peer_quality")
    a = torch.linspace(0.99, 0.01, 1000)
    batches = [
        torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(6)
    ]

    unet, opt, sched, ema = peer(0)  # diffusers' own loop
    gen = torch.Generator().manual_seed(1)
    losses = []
    for x in batches:
        losses.append(pq.peer_step(unet, opt, a, gen, x, False))
        sched.step()
        ema.step(unet.parameters())

    g_unet, g_opt, g_sched, g_ema = peer(0)
    step = pq.GraphedStep(
        g_unet, g_opt, g_ema, a, torch.Generator().manual_seed(1), False, capture=False
    )
    g_losses = [step(x, g_sched) for x in batches]

    torch.testing.assert_close(torch.stack(g_losses), torch.stack(losses))
    assert g_ema.optimization_step == ema.optimization_step == 6
    for p, q in zip(g_unet.parameters(), unet.parameters()):
        torch.testing.assert_close(p, q)
    for p, q in zip(g_ema.shadow_params, ema.shadow_params):
        torch.testing.assert_close(p, q)
    # and the EMA moved: by the sixth step its decay is well below 1
    assert any(not torch.equal(p, q) for p, q in zip(g_ema.shadow_params, g_unet.parameters()))
    assert float(step.lr) == pytest.approx(g_sched.get_last_lr()[0])
