"""The few-step solvers against a diffusion ODE whose solution is known in closed form.

For data x_0 ~ N(0, c² I), the exact noise predictor is linear, eps(x_t) = s x_t / (α² c² + s²)
(α = √ᾱ_t, s = √(1-ᾱ_t)), and the probability-flow ODE in x̃ = x_t/α with σ = s/α has the
solution x̃(σ) ∝ √(c² + σ²): from x_T the ODE lands on x_0 = x̃_T c / √(c² + σ_T²).
"""

import functools
import math

import pytest
import torch

from ddpm.diffusion.schedule import NoiseSchedule, make_schedule
from ddpm.sampling import grids
from ddpm.sampling import samplers as S
from ddpm.sampling import solvers as V

C = 0.5  # data standard deviation


@pytest.fixture(scope="module")
def schedule():
    return make_schedule("linear", 1000)


def gaussian_eps(schedule):
    abar = schedule.alphas_cumprod

    def eps(x_t, t):
        a = abar[t].view(-1, *([1] * (x_t.ndim - 1)))
        return (1 - a).sqrt() * x_t / (a * C**2 + (1 - a))

    return eps


def ode_error(sampler, schedule, steps, spacing=None):
    """Largest error against the exact ODE solution; spacing None: the sampler's default."""
    x_T = torch.randn(16, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ts = S.timesteps_for(schedule, steps, spacing or S.DEFAULT_SPACING[sampler])
    abar_first = float(schedule.alphas_cumprod[ts[0]])
    sigma_first = math.sqrt((1 - abar_first) / abar_first)
    exact = x_T / math.sqrt(abar_first) * C / math.sqrt(C**2 + sigma_first**2)
    out = S.sample(sampler, gaussian_eps(schedule), schedule, x_T, steps=steps, spacing=spacing)
    return (out - exact).abs().max().item()


@pytest.mark.parametrize("spacing", ["karras", "trailing"])
def test_heun_is_second_order_and_ddim_first_order(schedule, spacing):
    """Halving the step halves DDIM's (Euler's) error and quarters Heun's."""
    ddim = [ode_error("ddim", schedule, n, spacing) for n in (10, 20, 40)]
    heun = [ode_error("heun", schedule, n, spacing) for n in (10, 20, 40)]
    for coarse, fine in zip(ddim, ddim[1:]):
        assert 1.6 < coarse / fine < 2.6
    for coarse, fine in zip(heun[1:], heun[2:]):
        assert coarse / fine > 3.2
    assert heun[-1] < ddim[-1] / 4


def test_dpm_solver_beats_ddim_at_equal_steps(schedule):
    for n in (10, 20):
        assert ode_error("dpm-solver", schedule, n, "karras") < ode_error(
            "ddim", schedule, n, "karras"
        )


@pytest.mark.parametrize("steps, factor", [(10, 1.2), (20, 2.5), (50, 20)])
def test_dpm_solver_beats_ddim_at_each_ones_default_spacing(schedule, steps, factor):
    """What `ddpm sample --sampler dpm-solver` gives against DDIM's default. On DDIM's leading
    timesteps the solver's last update (to t = 0, with step ratio r = 1/4) made it worse than
    DDIM at 10 and 20 steps; trailing timesteps keep it ahead, more so the more steps."""
    assert ode_error("dpm-solver", schedule, steps) * factor < ode_error("ddim", schedule, steps)


def test_spacings_start_where_they_say_and_never_repeat(schedule):
    assert S.timesteps_for(schedule, 50, "trailing")[:2] == [999, 979]
    assert S.timesteps_for(schedule, 50, "trailing")[-1] == 19
    assert S.timesteps_for(schedule, 50, "leading")[0] == 980
    karras = S.timesteps_for(schedule, 25, "karras")
    assert karras[0] == 999 and karras[-1] == 0
    assert karras == sorted(set(karras), reverse=True)
    gaps = [a - b for a, b in zip(karras, karras[1:])]
    assert gaps[0] > gaps[-1]  # dense near the data, sparse near the noise
    assert S.network_evaluations("heun", 25, 1000) == 49
    assert S.network_evaluations("ddim", 50, 1000) == 50
    with pytest.raises(ValueError, match="spacing"):
        S.ddim_timesteps(1000, 10, "uniform")


def exact_path(lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t and x̂_0 at log-SNR λ on one exact ODE path of the Gaussian data above: in x̃ = x_t/α
    with σ = e^{-λ} the path is x̃ = √(c² + σ²) and x̂_0 = c² x̃ / (c² + σ²)."""
    var = C**2 + math.exp(-2 * lam)
    alpha = math.sqrt(1 / (1 + math.exp(-2 * lam)))
    return torch.tensor(alpha * math.sqrt(var), dtype=torch.float64), torch.tensor(
        C**2 / math.sqrt(var), dtype=torch.float64
    )


RATIOS = [(1.0, 1.0), (0.6, 1.5)]  # the earlier steps' lengths against the last: equal, or not


def dpm_local_error(order: int, h: float, ratios: tuple[float, float]) -> float:
    """The error of one DPM-Solver++ update of `order` over a step h in log-SNR, taken from the
    exact path with the exact data predictions of the steps before it."""
    lams = [0.0 - h * sum(ratios[: order - 1 - j]) for j in range(order)]  # oldest first
    x0s = [exact_path(lam)[1] for lam in lams]
    x = V.dpm_solver_update(exact_path(lams[-1])[0], x0s, lams, lams[-1] + h)
    return abs(x - exact_path(lams[-1] + h)[0]).item()


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("ratios", RATIOS)
def test_a_dpm_solver_update_has_its_order(order, ratios):
    """One update of order k is off by O(h^(k+1)): halving every step divides its error by
    about 2^(k+1), with equal steps or not (r0 != 1)."""
    errors = [dpm_local_error(order, h, ratios) for h in (0.2, 0.1, 0.05)]
    for coarse, fine in zip(errors, errors[1:]):
        assert coarse / fine == pytest.approx(2 ** (order + 1), rel=0.1)


@pytest.mark.parametrize("ratios", RATIOS)
def test_a_3m_update_is_far_closer_than_a_2m_one(ratios):
    """3M as everyone writes it: its error still falls as h^3 (its D2 is half the Taylor
    term; see dpm_solver_sample), but it is at least 5x smaller than 2M's at every h."""
    for h in (0.1, 0.05, 0.025):
        assert dpm_local_error(3, h, ratios) * 5 < dpm_local_error(2, h, ratios)
    fine = dpm_local_error(3, 0.025, ratios)
    assert dpm_local_error(3, 0.05, ratios) / fine == pytest.approx(8, rel=0.25)


def test_dpm_solver_3m_beats_2m_from_20_steps(schedule):
    """The chain as `ddpm sample --sampler dpm-solver-3m` runs it: ahead of 2M at 20 and 40
    steps on Karras' timesteps (the first, lower-order steps bound both at 10)."""
    for n in (20, 40):
        assert ode_error("dpm-solver-3m", schedule, n, "karras") < ode_error(
            "dpm-solver", schedule, n, "karras"
        )


# UniPC and iPNDM. One update from the exact history first (its order, cleanly), then the
# whole chain on a schedule whose log-SNR is linear in t, so that the logsnr grid falls on
# timesteps exactly and nothing but the solver's own error is measured.


def x0_on(x: torch.Tensor, lam: float) -> torch.Tensor:
    """The exact data prediction at x_t for the Gaussian data: x̂_0 = c² x̃ / (c² + σ²)."""
    alpha, var = math.sqrt(1 / (1 + math.exp(-2 * lam))), math.exp(-2 * lam)
    return C**2 * (x / alpha) / (C**2 + var)


def unipc_local_error(p: int, h: float, ratios, corrector: bool) -> float:
    """The error of one UniP-p step (then UniC-p, from the model's x̂_0 at the predicted point
    when `corrector`) over h in log-SNR, from the exact path and its exact x̂_0s."""
    lams = [0.0 - h * sum(ratios[: p - 1 - j]) for j in range(p)]  # oldest first
    x0s = [exact_path(lam)[1] for lam in lams]
    x, lam_next = exact_path(lams[-1])[0], lams[-1] + h
    y = V.unipc_update(x, x0s, lams, lam_next)
    if corrector:
        y = V.unipc_update(x, x0s, lams, lam_next, x0_next=x0_on(y, lam_next))
    return abs(y - exact_path(lam_next)[0]).item()


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("ratios", RATIOS)
def test_a_unipc_step_has_order_p_and_p_plus_1_after_its_corrector(p, ratios):
    """UniP-p is off by O(h^(p+1)) after one step, and UniC-p, using the one network call the
    next step makes anyway, by O(h^(p+2)) (Zhao et al. 2023, the order of UniC-p is p + 1);
    measured slopes 2.0/3.0, 3.0/4.0, 3.95/5.0 at h = 0.05 -> 0.025."""
    for corrector, order in ((False, p), (True, p + 1)):
        errors = [unipc_local_error(p, h, ratios, corrector) for h in (0.1, 0.05, 0.025)]
        slope = math.log2(errors[-2] / errors[-1])
        assert slope == pytest.approx(order + 1, abs=0.15), (corrector, errors)


def test_unip_2_is_dpm_solver_2m():
    """With one difference UniPC takes its weight 1/2 (the paper's code, diffusers), which is
    DPM-Solver++(2M)'s update, unequal steps or not."""
    lams, nxt = [-0.3, 0.0], 0.25
    x0s = [exact_path(lam)[1] for lam in lams]
    x = exact_path(0.0)[0]
    torch.testing.assert_close(
        V.unipc_update(x, x0s, lams, nxt), V.dpm_solver_update(x, x0s, lams, nxt)
    )


def ipndm_local_error(k: int, h: float, ratio: float = 1.0) -> float:
    """One Adams-Bashforth step of order k on dx̃/dσ = eps down the exact path
    x̃ = √(c² + σ²) (eps = σ/√(c² + σ²)), from the exact slopes at the k σs before it: equal
    steps h in σ (ratio 1), or steps that shrink by `ratio` each (h the last one, as on EDM's
    grid)."""
    sigmas = [1.0]
    for j in range(1, k):
        sigmas.insert(0, sigmas[0] + h * ratio**j)  # oldest (noisiest) first
    eps = [torch.tensor(s / math.sqrt(C**2 + s**2), dtype=torch.float64) for s in sigmas]
    x = torch.tensor(math.sqrt(C**2 + sigmas[-1] ** 2), dtype=torch.float64)
    out = V.ipndm_update(x, eps, sigmas, sigmas[-1] - h)
    return abs(out - math.sqrt(C**2 + (sigmas[-1] - h) ** 2)).item()


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("ratio", [1.0, 2.0])
def test_an_ipndm_step_has_its_adams_bashforth_order(k, ratio):
    """Order k from k slopes, on an even grid and on one whose steps halve each time: halving
    h divides one step's error by about 2^(k+1) (measured 2.0, 3.0, 3.97, 4.93 at h = 0.025 ->
    0.0125 on the even grid, 4.86 for k = 4 at 0.00625 -> 0.003125 on the other). The
    equal-step weights iPNDM's reference keeps on every grid are of order 1 on the second."""
    steps = (0.05, 0.025, 0.0125) if ratio == 1 else (0.0125, 0.00625, 0.003125)
    errors = [ipndm_local_error(k, h, ratio) for h in steps]
    assert math.log2(errors[-2] / errors[-1]) == pytest.approx(k + 1, abs=0.15)


def test_adams_bashforth_weights_are_the_textbook_ones_on_an_even_grid():
    """(Hairer, Nørsett & Wanner, §III.1, Table 1.1), whatever the step and the origin."""
    textbook = {1: [1], 2: [-1 / 2, 3 / 2], 3: [5 / 12, -16 / 12, 23 / 12],
                4: [-9 / 24, 37 / 24, -59 / 24, 55 / 24]}  # fmt: skip
    for k, weights in textbook.items():
        for h, start in ((1.0, 0.0), (-0.3, 80.0)):
            nodes = [start + h * j for j in range(k)]
            got = V.adams_bashforth_weights(nodes, start + h * k)
            assert got == pytest.approx(weights, abs=1e-12)


def linear_logsnr_schedule(T: int = 4001, lam_max: float = 3.0, lam_min: float = -3.0):
    """λ_t falls linearly from lam_max to lam_min: logsnr grids of 1 + a divisor of T - 1
    steps land on timesteps exactly."""
    lam = torch.linspace(lam_max, lam_min, T, dtype=torch.float64)
    abar = torch.sigmoid(2 * lam)
    return NoiseSchedule.from_betas(1 - abar / torch.cat([abar.new_ones(1), abar[:-1]]))


def chain_error(sampler: str, schedule, steps: int, spacing: str) -> float:
    """The chain's error against the exact x̂_0 at its last timestep: every sampler returns
    the model's x̂_0 there, so this measures the error of x at that point and nothing else."""
    x_T = torch.randn(16, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ts = S.timesteps_for(schedule, steps, spacing)
    first, last = (float(schedule.sigmas[t]) for t in (ts[0], ts[-1]))
    x_tilde = x_T / math.sqrt(float(schedule.alphas_cumprod[ts[0]]))
    exact = x_tilde * C**2 / math.sqrt((C**2 + first**2) * (C**2 + last**2))
    out = S.sample(sampler, gaussian_eps(schedule), schedule, x_T, steps=steps, spacing=spacing)
    return (out - exact).abs().max().item()


@pytest.mark.parametrize(
    "sampler, order", [("ddim", 1), ("dpm-solver-3m", 2), ("unipc", 3), ("ipndm", 2)]
)
def test_the_chains_converge_at_the_order_of_their_lowest_order_step(sampler, order):
    """Error against steps on even log-SNR steps (41 -> 81 -> 161 steps; measured slopes: DDIM
    0.99, DPM-Solver++(3M) 2.04, UniPC 2.93, iPNDM 1.98 and 1.99). A chain is only as good as
    its worst step: 3M's first step is Euler's (error h², global order 2), and UniPC's first
    (UniP-1 + UniC-1) and last (UniP-2, whose corrector would follow the last network call)
    are h³, so UniPC-3 converges as h³ though its middle steps are h⁵. iPNDM's steps, even in
    λ, are uneven in σ, where its equal-step weights make it a second-order chain (the grid's
    own weights gave 3.63-3.70, yet ended further from the solution at 5-20 steps of two
    trained models: ipndm_sample's docstring)."""
    schedule = linear_logsnr_schedule()
    errors = [chain_error(sampler, schedule, n, "logsnr") for n in (41, 81, 161)]
    for coarse, fine in zip(errors, errors[1:]):
        assert math.log2(coarse / fine) == pytest.approx(order, abs=0.3)


@pytest.mark.parametrize("steps", [5, 10, 20])
def test_unipc_leads_the_older_samplers_at_few_steps(schedule, steps):
    """On the DDPM schedule with each sampler's default grid, as `ddpm sample` runs them: at 5,
    10 and 20 steps UniPC is at least 1.5x closer than DDIM, DPM-Solver++(2M/3M) and Heun
    (measured at 10 steps: 0.08 against 0.29-0.40). iPNDM is nearer still at 5 and 10 steps
    on this one-Gaussian path (0.061 and 0.022), not at 20 (0.018 against UniPC's 0.001)."""
    older = min(ode_error(s, schedule, steps) for s in ("ddim", "dpm-solver", "dpm-solver-3m"))
    older = min(older, ode_error("heun", schedule, steps))
    assert ode_error("unipc", schedule, steps) * 1.5 < older


def test_unipc_takes_order_2_below_20_steps_and_3_from_20(schedule):
    """Its default order: on the log-SNR grid order 3 was up to 3x further from the ODE's
    solution at 5-8 steps of three small models (unipc_sample's docstring)."""
    x_T = torch.randn(4, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    eps = gaussian_eps(schedule)
    for steps, order in ((5, 2), (19, 2), (20, 3)):
        default = S.unipc_sample(eps, schedule, x_T, steps=steps)
        other = 5 - order  # 3 or 2
        run = functools.partial(S.unipc_sample, eps, schedule, x_T, steps=steps)
        assert torch.equal(default, run(order=order))
        assert not torch.equal(default, run(order=other))


# The time grids


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_each_grid_is_strictly_decreasing_in_range_and_as_long_as_asked(name):
    schedule = make_schedule(name, 1000)
    for spacing in grids.GRIDS:
        for steps in (1, 2, 5, 10, 50, 200, 1000):
            ts = S.timesteps_for(schedule, steps, spacing)
            assert len(ts) == steps and ts[-1] >= 0 and ts[0] <= schedule.T - 1
            assert all(a > b for a, b in zip(ts, ts[1:])), (spacing, steps)
    for spacing in ("edm", "logsnr", "trailing"):  # they start where x_T was drawn
        assert S.timesteps_for(schedule, 10, spacing)[0] == schedule.T - 1
    assert S.timesteps_for(schedule, 25, "karras") == S.timesteps_for(schedule, 25, "edm")
    assert S.network_evaluations("unipc", 10, 1000) == S.network_evaluations("ipndm", 10, 1000)
    assert S.network_evaluations("unipc", 10, 1000) == 10


def within_rounding(values: torch.Tensor, ts: list[int], targets: torch.Tensor) -> bool:
    """Each target lies between the values at t - 1 and t + 1: t is the nearest timestep or
    off by the rounding to integers alone. `values` is monotone in t."""
    T = values.shape[0]
    for t, target in zip(ts, targets.tolist()):
        lo, hi = sorted((float(values[max(t - 1, 0)]), float(values[min(t + 1, T - 1)])))
        if not lo - 1e-12 <= target <= hi + 1e-12:
            return False
    return True


@pytest.mark.parametrize("name", ["linear", "quadratic"])
@pytest.mark.parametrize("steps", [5, 10, 20])
def test_edm_and_logsnr_grids_are_even_in_their_variable(name, steps):
    """edm: σ^(1/ρ) evenly spaced from σ_max to σ_min (Karras et al. eq. 5, ρ = 7); logsnr:
    log-SNR evenly spaced between the schedule's ends; both up to the integer timesteps.
    (Not on the cosine schedule: see the next test.)"""
    schedule = make_schedule(name, 1000)
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    rho_root = schedule.sigmas ** (1 / grids.EDM_RHO)
    edm = S.timesteps_for(schedule, steps, "edm")
    assert edm[0] == 999 and edm[-1] == 0
    assert within_rounding(rho_root, edm, rho_root[-1] + ramp * (rho_root[0] - rho_root[-1]))
    logsnr = -2 * schedule.log_sigmas
    ts = S.timesteps_for(schedule, steps, "logsnr")
    assert ts[0] == 999 and ts[-1] == 0
    assert within_rounding(logsnr, ts, logsnr[-1] + ramp * (logsnr[0] - logsnr[-1]))


def test_points_that_share_a_timestep_move_to_the_next_free_one():
    """The cosine schedule's last β is clipped at 0.999, so σ_max is about 2e4 and EDM's first
    points (and a few of logsnr's) all fall nearest to t = 999: they become 999, 998, ...
    rather than one call, so the grid keeps its length (and its network calls)."""
    schedule = make_schedule("cosine", 1000)
    edm = S.timesteps_for(schedule, 10, "edm")
    assert edm[:6] == [999, 998, 997, 996, 995, 994] and edm[-1] == 0
    assert len(S.timesteps_for(schedule, 10, "logsnr")) == 10
