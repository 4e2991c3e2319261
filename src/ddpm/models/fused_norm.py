"""GroupNorm, the time embedding's scale/shift and SiLU as two Triton kernels a direction.

What a ResBlock computes around each convolution,

    y = silu(((x + a - mu) / sigma * gamma + beta) * (1 + s) + b)

with x of shape (B, C, *spatial), mu and sigma the statistics of each (image, group of
channels), gamma and beta the GroupNorm's affine weights, and a (added before the norm), s and
b (the AdaGN scale and shift) one value per (image, channel), is `y = silu(x * A + B)` for two
(B, C) matrices A and B of those statistics and parameters. So the forward pass is one kernel
that sums each channel of each image (`_sums`: S and SS, from which mu and sigma of a group
follow), a few operations on (B, C) matrices, and one elementwise kernel (`_affine_act`). The
backward pass is the same shape: one kernel sums dz and dz * x per channel (`_grad_sums`, with
dz = dy * silu'(z) recomputed from x), the gradients of every (B, C) quantity follow by hand
(`_coefficient_grads`), and one elementwise kernel writes dx = dz * A + C1 + x * C2.

Every tensor is read through its strides, so channels-last activations need no copy. Sums are
in float32 over E[x^2] - E[x]^2, enough for bf16 training. The module is imported only where
the fused path runs (CUDA, or Triton's CPU interpreter under TRITON_INTERPRET=1 in the tests);
everywhere else `ddpm.models.layers.GroupNorm` computes the same with the plain modules.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK_HW, BLOCK_C = 64, 32


@triton.jit
def _silu_and_grad(z):
    sig = tl.sigmoid(z)
    return z * sig, sig * (1 + z * (1 - sig))


@triton.jit
def _sums(x, s_out, ss_out, C, HW, sxb, sxc, sxh, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr):
    """S[b, c] = sum over positions of x[b, c], SS[b, c] of x[b, c]^2 (float32)."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    on_c = c < C
    s = tl.zeros([BLOCK_C], tl.float32)
    ss = tl.zeros([BLOCK_C], tl.float32)
    for h0 in range(0, HW, BLOCK_HW):
        h = h0 + tl.arange(0, BLOCK_HW)
        mask = (h < HW)[:, None] & on_c[None, :]
        v = tl.load(x + b * sxb + h[:, None] * sxh + c[None, :] * sxc, mask=mask, other=0.0)
        v = v.to(tl.float32)
        s += tl.sum(v, 0)
        ss += tl.sum(v * v, 0)
    tl.store(s_out + b * C + c, s, mask=on_c)
    tl.store(ss_out + b * C + c, ss, mask=on_c)


@triton.jit
def _affine_act(
    x, y, A, B, C, HW, sxb, sxc, sxh, syb, syc, syh,
    ACT: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """y = silu(x * A[b, c] + B[b, c]) (or without the silu)."""
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    on_c = c < C
    mask = (h < HW)[:, None] & on_c[None, :]
    a = tl.load(A + b * C + c, mask=on_c, other=0.0)
    k = tl.load(B + b * C + c, mask=on_c, other=0.0)
    v = tl.load(x + b * sxb + h[:, None] * sxh + c[None, :] * sxc, mask=mask, other=0.0)
    z = v.to(tl.float32) * a[None, :] + k[None, :]
    if ACT:
        z, _ = _silu_and_grad(z)
    out = y + b * syb + h[:, None] * syh + c[None, :] * syc
    tl.store(out, z.to(y.dtype.element_ty), mask=mask)


@triton.jit
def _grad_sums(
    x, dy, A, B, p_out, q_out, C, HW, sxb, sxc, sxh, sdb, sdc, sdh,
    ACT: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """P[b, c] = sum of dz, Q[b, c] = sum of dz * x, dz the gradient at z = x * A + B."""
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    on_c = c < C
    a = tl.load(A + b * C + c, mask=on_c, other=0.0)
    k = tl.load(B + b * C + c, mask=on_c, other=0.0)
    p = tl.zeros([BLOCK_C], tl.float32)
    q = tl.zeros([BLOCK_C], tl.float32)
    for h0 in range(0, HW, BLOCK_HW):
        h = h0 + tl.arange(0, BLOCK_HW)
        mask = (h < HW)[:, None] & on_c[None, :]
        v = tl.load(x + b * sxb + h[:, None] * sxh + c[None, :] * sxc, mask=mask, other=0.0)
        g = tl.load(dy + b * sdb + h[:, None] * sdh + c[None, :] * sdc, mask=mask, other=0.0)
        v, dz = v.to(tl.float32), g.to(tl.float32)
        if ACT:
            _, slope = _silu_and_grad(v * a[None, :] + k[None, :])
            dz = dz * slope
        dz = tl.where(mask, dz, 0.0)
        p += tl.sum(dz, 0)
        q += tl.sum(dz * v, 0)
    tl.store(p_out + b * C + c, p, mask=on_c)
    tl.store(q_out + b * C + c, q, mask=on_c)


@triton.jit
def _input_grad(
    x, dy, dx, A, B, C1, C2, C, HW, sxb, sxc, sxh, sdb, sdc, sdh,
    ACT: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """dx = dz * A + C1 + x * C2 (dx has x's strides)."""
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1) * BLOCK_HW + tl.arange(0, BLOCK_HW)
    c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    on_c = c < C
    mask = (h < HW)[:, None] & on_c[None, :]
    at = b * C + c
    a = tl.load(A + at, mask=on_c, other=0.0)[None, :]
    k = tl.load(B + at, mask=on_c, other=0.0)[None, :]
    c1 = tl.load(C1 + at, mask=on_c, other=0.0)[None, :]
    c2 = tl.load(C2 + at, mask=on_c, other=0.0)[None, :]
    where = b * sxb + h[:, None] * sxh + c[None, :] * sxc
    v = tl.load(x + where, mask=mask, other=0.0).to(tl.float32)
    dz = tl.load(dy + b * sdb + h[:, None] * sdh + c[None, :] * sdc, mask=mask, other=0.0)
    dz = dz.to(tl.float32)
    if ACT:
        _, slope = _silu_and_grad(v * a + k)
        dz = dz * slope
    tl.store(dx + where, (dz * a + c1 + v * c2).to(dx.dtype.element_ty), mask=mask)


def _flat(x: Tensor) -> Tensor:
    """(B, C, *spatial) as (B, C, N), a view where the strides allow (channels-last does)."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def _walkable(x: Tensor) -> bool:
    """One stride walks every position of x (B, C, *spatial): `_flat(x)` is a view. Read
    from the strides alone (no data pointer), so that torch.compile traces it."""
    dims = [(n, st) for n, st in zip(x.shape[2:], x.stride()[2:]) if n != 1]
    return all(st == n_next * st_next for (_, st), (n_next, st_next) in zip(dims, dims[1:]))


def _grid_reduce(B: int, C: int) -> tuple[int, int]:
    return (B, triton.cdiv(C, BLOCK_C))


def _grid_map(B: int, C: int, N: int) -> tuple[int, int, int]:
    return (B, triton.cdiv(N, BLOCK_HW), triton.cdiv(C, BLOCK_C))


def _coefficients(S, SS, N, groups, eps, gamma, beta, a, u, sh):
    """A and B of y = act(x * A + B) from the channel sums of x (float32 (B, C) matrices);
    returns them with what the backward pass needs."""
    Bn, C = S.shape
    cg = C // groups
    n = cg * N  # elements of a group
    S1, SS1 = S + N * a, SS + 2 * a * S + N * a * a  # the sums of x + a
    mean = S1.view(Bn, groups, cg).sum(-1) / n
    var = (SS1.view(Bn, groups, cg).sum(-1) / n - mean * mean).clamp_min(0)
    r = torch.rsqrt(var + eps)
    mean_c, r_c = mean.repeat_interleave(cg, 1), r.repeat_interleave(cg, 1)
    t = (a - mean_c) * r_c
    A = r_c * gamma * u
    K = (t * gamma + beta) * u + sh
    return A, K, (mean, r, mean_c, r_c, t)


def _coefficient_grads(P, Q, S, N, groups, gamma, beta, a, u, saved):
    """The gradients of `_coefficients`' inputs given dA = Q and dB = P, and the (B, C)
    matrices C1, C2 of dx = dz * A + C1 + x * C2."""
    mean, r, mean_c, r_c, t = saved
    Bn, C = P.shape
    cg = C // groups
    n = cg * N
    dA, dK = Q, P
    d_shift = dK
    d_scale = dA * r_c * gamma + dK * (t * gamma + beta)
    d_gamma = (dA * r_c * u + dK * t * u).sum(0)
    d_beta = (dK * u).sum(0)
    d_r = (dA * gamma * u + dK * gamma * u * (a - mean_c)).view(Bn, groups, cg).sum(-1)
    d_mean = (-dK * gamma * u * r_c).view(Bn, groups, cg).sum(-1)
    d_var = -0.5 * r**3 * d_r
    d_mean = d_mean - 2 * mean * d_var
    dS1 = (d_mean / n).repeat_interleave(cg, 1)  # the gradient of each sum of x + a
    dSS1 = (d_var / n).repeat_interleave(cg, 1)
    d_add = dK * gamma * u * r_c + N * dS1 + dSS1 * (2 * S + 2 * N * a)
    C1, C2 = dS1 + 2 * a * dSS1, 2 * dSS1  # dx from the sums: dS + 2 x dSS
    return d_gamma, d_beta, d_add, d_scale, d_shift, C1, C2


# The four kernel launches as custom operators: torch.compile sees each as one opaque call with
# known output shapes (`register_fake`) and traces the (B, C) arithmetic around them, instead
# of tracing into Triton's launcher.
@torch.library.custom_op("ddpm::gn_sums", mutates_args=())
def _op_sums(x: Tensor) -> tuple[Tensor, Tensor]:
    xf = _flat(x)
    Bn, C, N = xf.shape
    S = torch.empty(Bn, C, device=x.device, dtype=torch.float32)
    SS = torch.empty_like(S)
    _sums[_grid_reduce(Bn, C)](xf, S, SS, C, N, *xf.stride(), BLOCK_HW, BLOCK_C)
    return S, SS


@torch.library.custom_op("ddpm::gn_affine_act", mutates_args=())
def _op_affine_act(x: Tensor, A: Tensor, K: Tensor, act: bool) -> Tensor:
    xf = _flat(x)
    Bn, C, N = xf.shape
    y = torch.empty_like(x)  # x's strides, so that yf is a view of y
    yf = _flat(y)
    _affine_act[_grid_map(Bn, C, N)](
        xf, yf, A, K, C, N, *xf.stride(), *yf.stride(), act, BLOCK_HW, BLOCK_C
    )
    return y


@torch.library.custom_op("ddpm::gn_grad_sums", mutates_args=())
def _op_grad_sums(x: Tensor, dy: Tensor, A: Tensor, K: Tensor, act: bool) -> tuple[Tensor, Tensor]:
    xf, dyf = _flat(x), _flat(dy)
    Bn, C, N = xf.shape
    P, Q = torch.empty_like(A), torch.empty_like(A)
    _grad_sums[_grid_reduce(Bn, C)](
        xf, dyf, A, K, P, Q, C, N, *xf.stride(), *dyf.stride(), act, BLOCK_HW, BLOCK_C
    )
    return P, Q


@torch.library.custom_op("ddpm::gn_input_grad", mutates_args=())
def _op_input_grad(
    x: Tensor, dy: Tensor, A: Tensor, K: Tensor, C1: Tensor, C2: Tensor, act: bool
) -> Tensor:
    xf, dyf = _flat(x), _flat(dy)
    Bn, C, N = xf.shape
    dx = torch.empty_like(x)
    dxf = _flat(dx)
    _input_grad[_grid_map(Bn, C, N)](
        xf, dyf, dxf, A, K, C1, C2, C, N, *xf.stride(), *dyf.stride(), act, BLOCK_HW, BLOCK_C
    )
    return dx


@_op_sums.register_fake
def _(x):
    S = x.new_empty(x.shape[:2], dtype=torch.float32)
    return S, torch.empty_like(S)


@_op_affine_act.register_fake
def _(x, A, K, act):
    return torch.empty_like(x)


@_op_grad_sums.register_fake
def _(x, dy, A, K, act):
    return torch.empty_like(A), torch.empty_like(A)


@_op_input_grad.register_fake
def _(x, dy, A, K, C1, C2, act):
    return torch.empty_like(x)


class _GroupNormAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, add, scale, shift, groups, eps, act):
        Bn, C, N = _flat(x).shape
        zeros = x.new_zeros(Bn, C, dtype=torch.float32)
        a = zeros if add is None else add.reshape(Bn, C).float()
        u = 1 + (zeros if scale is None else scale.reshape(Bn, C).float())
        sh = zeros if shift is None else shift.reshape(Bn, C).float()
        g, bt = gamma.float(), beta.float()
        S, SS = _op_sums(x)
        A, K, saved = _coefficients(S, SS, N, groups, eps, g, bt, a, u, sh)
        y = _op_affine_act(x, A, K, act)
        ctx.save_for_backward(x, S, A, K, g, bt, a, u, *saved)
        forms = [None if t is None else (t.shape, t.dtype) for t in (add, scale, shift)]
        ctx.setup = (groups, act, gamma.dtype, forms)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, S, A, K, g, bt, a, u, *saved = ctx.saved_tensors
        groups, act, dtype, forms = ctx.setup
        N = _flat(x).shape[2]
        P, Q = _op_grad_sums(x, dy, A, K, act)
        d_gamma, d_beta, d_add, d_scale, d_shift, C1, C2 = _coefficient_grads(
            P, Q, S, N, groups, g, bt, a, u, saved
        )
        dx = _op_input_grad(x, dy, A, K, C1, C2, act)
        extra = [
            None if form is None else grad.reshape(form[0]).to(form[1])
            for grad, form in zip((d_add, d_scale, d_shift), forms)
        ]
        return dx, d_gamma.to(dtype), d_beta.to(dtype), *extra, None, None, None


def group_norm_act(
    x: Tensor,
    groups: int,
    weight: Tensor,
    bias: Tensor,
    eps: float,
    *,
    add: Tensor | None = None,
    scale: Tensor | None = None,
    shift: Tensor | None = None,
    act: bool = True,
) -> Tensor:
    """silu(GroupNorm(x + add) * (1 + scale) + shift) in two kernels a direction; `add`,
    `scale` and `shift` hold one value per (image, channel) (shape (B, C, 1, ...)), each
    optional; `act` False leaves out the SiLU."""
    if x.shape[1] % groups:
        raise ValueError(f"{x.shape[1]} channels do not split into {groups} groups")
    if not _walkable(x):
        x = x.contiguous()
    return _GroupNormAct.apply(x, weight, bias, add, scale, shift, groups, eps, act)
