"""The importance sampling of timesteps of Nichol & Dhariwal 2021 §3.3 (the uniform and
log-normal samplers are tested in test_recipe.py)."""

import pytest
import torch

from ddpm.diffusion.schedule import make_schedule
from ddpm.diffusion.timesteps import ImportanceSampler, make_timestep_sampler


def importance(T, **kw):
    return ImportanceSampler(make_schedule("linear", T), **kw)


def fill(sampler, loss_of_t, rounds):
    """Feed every t `rounds` values loss_of_t(t)."""
    t = torch.arange(sampler.T).repeat(rounds)
    sampler.update(t, loss_of_t(t.double()))


def test_importance_is_uniform_until_every_t_has_ten_values():
    s = importance(20)
    torch.testing.assert_close(s.probabilities(), torch.full((20,), 1 / 20, dtype=torch.float64))
    fill(s, lambda t: t + 1, 9)
    s.update(torch.arange(19), torch.ones(19))  # t = 19 still has only 9 values
    torch.testing.assert_close(s.probabilities(), torch.full((20,), 1 / 20, dtype=torch.float64))
    t, w = s.sample(1000, torch.Generator().manual_seed(0), "cpu")
    assert torch.equal(w, torch.ones(1000))  # uniform: every weight 1/(T p_t) = 1
    s.update(torch.tensor([19]), torch.ones(1))
    assert not torch.allclose(s.probabilities(), torch.full((20,), 1 / 20, dtype=torch.float64))


def test_importance_probabilities_follow_eq_18_with_the_uniform_mix():
    T = 16
    s = importance(T, uniform_prob=0.001)
    fill(s, lambda t: 1.0 + t, 10)
    rms = torch.arange(1, T + 1, dtype=torch.float64)  # a constant history: √E[L²] = 1 + t
    expected = 0.999 * rms / rms.sum() + 0.001 / T
    p = s.probabilities()
    torch.testing.assert_close(p, expected)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12) and bool((p > 0).all())


def test_the_history_keeps_the_last_ten_values_per_t_in_batch_order():
    """Repeats of a t in one batch count as that many values, in order (a queue of 10 per t),
    as improved-diffusion's per-t queue fed one value at a time."""
    s = importance(5, history=10)
    g = torch.Generator().manual_seed(0)
    queues: dict[int, list[float]] = {t: [] for t in range(5)}
    for B in (7, 40, 3, 64, 1, 25):  # batches with many repeats, some longer than the history
        t = torch.randint(0, 5, (B,), generator=g)
        losses = torch.rand(B, generator=g, dtype=torch.float64)
        s.update(t, losses)
        for ti, li in zip(t.tolist(), losses.tolist()):
            queues[ti] = (queues[ti] + [li])[-10:]
        for ti in range(5):
            kept = sorted(s.losses[ti].tolist())[10 - len(queues[ti]) :]  # unfilled slots are 0
            assert kept == sorted(queues[ti])
    s2 = importance(3, history=10)
    s2.update(torch.tensor([0] * 25), torch.arange(25.0))
    assert sorted(s2.losses[0].tolist()) == [float(v) for v in range(15, 25)]
    seen = s.seen.clone()
    s.update(torch.tensor([2, 1]), torch.tensor([float("nan"), float("inf")]))  # not recorded
    assert bool(torch.isfinite(s.losses[:5]).all()) and torch.equal(s.seen, seen)


def test_importance_draws_follow_p_and_the_weights_are_unbiased():
    T = 8
    s = importance(T, uniform_prob=0.05)
    L = torch.tensor([50.0, 10.0, 5.0, 2.0, 1.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    fill(s, lambda t: L[t.long()], 10)
    p = s.probabilities()
    t, w = s.sample(200_000, torch.Generator().manual_seed(0), "cpu")
    freq = torch.bincount(t, minlength=T).double() / t.numel()
    torch.testing.assert_close(freq, p, atol=3e-3, rtol=0)
    torch.testing.assert_close(w.double(), 1 / (T * p[t]), rtol=1e-6, atol=0)
    # E[w L_t] = (1/T) Σ_t L_t, the uniform mean, for any per-t loss
    other = torch.randn(T, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for loss in (L, other):
        exact = (p * (1 / (T * p)) * loss).sum()
        torch.testing.assert_close(exact, loss.mean())
        assert float((w.double() * loss[t]).mean()) == pytest.approx(float(loss.mean()), rel=0.02)


def test_state_round_trips_and_the_factory_names_its_choices():
    s = importance(5)
    fill(s, lambda t: t * t, 12)
    again = make_timestep_sampler("importance", make_schedule("linear", 5))
    again.load_state_dict(s.state_dict())
    torch.testing.assert_close(again.probabilities(), s.probabilities())
    with pytest.raises(ValueError, match="does not fit"):
        make_timestep_sampler("importance", make_schedule("linear", 6)).load_state_dict(
            s.state_dict()
        )
    with pytest.raises(ValueError, match="importance"):
        make_timestep_sampler("loss-aware", make_schedule("linear", 5))
