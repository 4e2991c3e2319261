"""The cases of tests/test_fused_norm.py, run by it in a process of their own where Triton
interprets its kernels on the CPU: TRITON_INTERPRET=1 must be set before Triton is imported."""

import os

import pytest
import torch
import torch.nn.functional as F

from conftest import TINY_UNET, TINY_UNET2D, load_benchmark
from ddpm.models.layers import fuse_norms
from ddpm.models.unet import UNet, UNetConfig

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run by tests/test_fused_norm.py", allow_module_level=True)


@pytest.fixture
def kernels():
    """ddpm.models.fused_norm, its kernels built for Triton's CPU interpreter."""
    import ddpm.models.fused_norm as module

    return module


def plain(x, groups, w, b, form, e, s, sh):
    if form == "add":
        return F.silu(F.group_norm(x + e, groups, w, b, 1e-5))
    if form == "scale-shift":
        return F.silu(F.group_norm(x, groups, w, b, 1e-5) * (1 + s) + sh)
    h = F.group_norm(x, groups, w, b, 1e-5)
    return h if form == "norm" else F.silu(h)


@pytest.mark.parametrize("form", ["silu", "norm", "add", "scale-shift"])
@pytest.mark.parametrize("shape", [(3, 8, 5, 6), (3, 8, 5, 6, "channels-last"), (2, 12, 7)])
def test_the_kernels_give_the_plain_modules_outputs_and_gradients(kernels, form, shape):
    *dims, layout = shape if isinstance(shape[-1], str) else (*shape, None)
    g = torch.Generator().manual_seed(len(dims) + len(form))

    def draw(*size, scale=1.0, offset=0.0):
        return (
            torch.randn(*size, generator=g, dtype=torch.float64) * scale + offset
        ).requires_grad_()

    B, C = dims[:2]
    ones = [1] * (len(dims) - 2)
    x = draw(*dims, scale=2.0, offset=0.5)
    if layout:
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    w, b = draw(C, scale=0.3, offset=1.0), draw(C)
    e, s, sh = draw(B, C, *ones), draw(B, C, *ones, scale=0.2), draw(B, C, *ones)
    groups = 4
    extra = {"add": dict(add=e), "scale-shift": dict(scale=s, shift=sh)}.get(form, {})
    ours = kernels.group_norm_act(x, groups, w, b, 1e-5, act=form != "norm", **extra)
    theirs = plain(x, groups, w, b, form, e, s, sh)
    if layout:
        assert ours.is_contiguous(memory_format=torch.channels_last)  # no copy to NCHW
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    dy = torch.randn(theirs.shape, generator=g, dtype=torch.float64)
    inputs = [x, w, b, *extra.values()]
    for got, want in zip(
        torch.autograd.grad(ours, inputs, dy), torch.autograd.grad(theirs, inputs, dy)
    ):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scale_shift", [False, True])
def test_a_unet_with_fused_norms_trains_as_the_plain_one(kernels, scale_shift):
    torch.manual_seed(0)
    model = UNet(UNetConfig(**TINY_UNET, in_channels=1, scale_shift=scale_shift)).double()
    twin = UNet(UNetConfig(**TINY_UNET, in_channels=1, scale_shift=scale_shift)).double()
    twin.load_state_dict(model.state_dict())  # the same parameter names: checkpoints unchanged
    fuse_norms(twin)
    x, t = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([3, 700])
    for m in (model, twin):
        m(x, t).square().mean().backward()
    torch.testing.assert_close(twin(x, t), model(x, t), rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("norm", ["default", "scale_shift"])
def test_diffusers_unet_given_the_same_kernels_computes_as_before(kernels, norm):
    diffusers = pytest.importorskip("diffusers")
    common = load_benchmark("common")
    torch.manual_seed(0)
    config = dict(TINY_UNET2D, resnet_time_scale_shift=norm, in_channels=1, out_channels=1)
    model = diffusers.UNet2DModel(**config).double()
    twin = diffusers.UNet2DModel(**config).double()
    twin.load_state_dict(model.state_dict())
    common.fuse_peer_norms(twin)
    assert isinstance(twin.conv_act, torch.nn.Identity)  # its SiLU went into the kernel
    blocks = [m for m in twin.modules() if type(m).__name__ == "ResnetBlock2D"]
    assert blocks and all("forward" in vars(m) for m in blocks)  # each block's forward fused
    x, t = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([3, 700])
    for m in (model, twin):
        m(x, t).sample.square().mean().backward()
    torch.testing.assert_close(twin(x, t).sample, model(x, t).sample, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_torch_compile_traces_the_fused_norms_whole(kernels):
    """fullgraph: the kernels are custom operators, no graph break at any GroupNorm; the
    compiled network gives the plain one's loss and gradients."""
    torch.manual_seed(0)
    model = UNet(UNetConfig(**TINY_UNET, in_channels=1, scale_shift=True))
    twin = UNet(UNetConfig(**TINY_UNET, in_channels=1, scale_shift=True))
    twin.load_state_dict(model.state_dict())
    compiled = torch.compile(fuse_norms(twin), fullgraph=True)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 700])
    losses = [m(x, t).square().mean() for m in (model, compiled)]
    for loss in losses:
        loss.backward()
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-3, atol=1e-5, msg=name)
