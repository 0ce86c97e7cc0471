"""adaptive_parameters (SPEC.md 3, Eq. 4-6 / 11) and group_advantages (SPEC.md 2, Eq. 2) on
hand-computed cases and against Python's `statistics` module."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from apmpo_openrlhf.algorithms import adaptive_parameters, group_advantages, rollout_reward_summary

DELTA = 1e-6
F64 = torch.float64


def rewards(values, dtype=F64):
    return torch.tensor(values, dtype=dtype)


def assert_all(t: torch.Tensor, value: float, tol: float = 1e-12):
    assert torch.allclose(t, torch.full_like(t, value), rtol=0, atol=tol), (t, value)


# ----------------------------------------------------------------- adaptive_parameters
def test_binary_rewards_half_correct_defaults():
    """mu = 0.5, sigma = 0.5: FSS = 0.5 / (0.5 + delta) = 1 up to delta; eps = 0.2 + 0.2 tanh(1)."""
    r = rewards([1, 0, 1, 0, 0, 1, 1, 0])
    ap = adaptive_parameters(r, group_size=4)
    assert ap.p.shape == ap.eps_high.shape == ap.fss.shape == (8,)
    assert_all(ap.mu, 0.5)
    assert_all(ap.sigma, 0.5)
    assert_all(ap.fss, 1.0, tol=3e-6)
    assert_all(ap.fss, 0.5 / (0.5 + DELTA))
    assert_all(ap.eps_high, 0.2 + 0.2 * math.tanh(1.0), tol=1e-6)
    assert_all(ap.p, math.exp(-0.8 * 0.5))
    assert ap.summary()["eps_high"] == pytest.approx(0.2 + 0.2 * math.tanh(1.0), abs=1e-6)


@pytest.mark.parametrize("mu", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("gamma", [0.2, 0.8, 1.0])
@pytest.mark.parametrize("p_schedule", ["exp", "linear", "fixed"])
def test_p_schedules(mu, gamma, p_schedule):
    k = int(mu * 4)
    r = rewards([1] * k + [0] * (4 - k))
    ap = adaptive_parameters(r, 4, gamma=gamma, p_schedule=p_schedule, p_fixed=0.7)
    expected = {
        "exp": math.exp(-gamma * mu),  # Eq. 4
        "linear": min(1.0, max(0.05, 1 - gamma * mu)),  # Eq. 11
        "fixed": 0.7,
    }[p_schedule]
    assert_all(ap.p, expected)


def test_linear_p_is_clamped_at_p_min():
    r = rewards([1, 1, 1, 0])
    ap = adaptive_parameters(r, 4, gamma=2.0, p_schedule="linear", p_min=0.1)  # 1 - 1.5 < 0.1
    assert_all(ap.p, 0.1)


@pytest.mark.parametrize("mu", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("fss", ["full", "mu", "inv_sigma"])
@pytest.mark.parametrize("eps_schedule", ["tanh", "linear", "fixed"])
def test_fss_and_eps_schedules(mu, fss, eps_schedule):
    k = int(mu * 4)
    r = rewards([1] * k + [0] * (4 - k))
    sigma = math.sqrt(mu * (1 - mu))  # population std of binary rewards
    score = {"full": mu / (sigma + DELTA), "mu": mu, "inv_sigma": 1 / (sigma + DELTA)}[fss]  # Eq. 5
    eps = {
        "tanh": 0.1 + (0.3 - 0.1) * math.tanh(score),  # Eq. 6
        "linear": min(0.3, 0.1 + (0.3 - 0.1) * score),  # Algorithm 1, line 18
        "fixed": 0.25,
    }[eps_schedule]
    ap = adaptive_parameters(r, 4, fss=fss, eps_schedule=eps_schedule, eps_min=0.1, eps_max=0.3, eps_fixed=0.25)
    assert_all(ap.sigma, sigma)
    assert_all(ap.fss, score, tol=1e-9)
    assert_all(ap.eps_high, eps)


def test_binary_full_fss_is_sqrt_mu_over_one_minus_mu():
    r = rewards([1, 0, 0, 0, 1, 1, 0, 0, 1, 0])  # mu = 0.4
    ap = adaptive_parameters(r, 5)
    assert_all(ap.fss, math.sqrt(0.4 / 0.6), tol=5e-6)


def test_scope_group_versus_batch():
    values = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    r = rewards(values)
    grp = adaptive_parameters(r, 4, scope="group")
    bat = adaptive_parameters(r, 4, scope="batch")
    # Per group: mu = 1, 0.25, 0; sigma = 0, sqrt(3)/4, 0.
    for g, mu in enumerate([1.0, 0.25, 0.0]):
        sl = slice(4 * g, 4 * g + 4)
        sigma = math.sqrt(mu * (1 - mu))
        score = mu / (sigma + DELTA)
        assert_all(grp.mu[sl], mu)
        assert_all(grp.sigma[sl], sigma)
        assert_all(grp.p[sl], math.exp(-0.8 * mu))
        assert_all(grp.eps_high[sl], 0.2 + 0.2 * math.tanh(score))
    assert_all(grp.eps_high[:4], 0.4)  # all correct: FSS = 1e6, tanh = 1
    assert_all(grp.eps_high[8:], 0.2)  # all wrong: FSS = 0
    mu_b = 5 / 12
    sigma_b = statistics.pstdev(values)
    assert_all(bat.mu, mu_b)
    assert_all(bat.sigma, sigma_b)
    assert_all(bat.p, math.exp(-0.8 * mu_b))
    assert_all(bat.eps_high, 0.2 + 0.2 * math.tanh(mu_b / (sigma_b + DELTA)))


def test_batch_statistics_from_the_sampled_batch_under_dynamic_filtering():
    """mu_R / sigma_R of every group sampled for the step (``batch_rewards``), one value per kept
    sample; scope="group" keeps each kept group's own statistics."""
    sampled = rewards([1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 1, 1, 0, 1])  # groups 0 and 2 dropped
    kept = torch.cat([sampled[4:8], sampled[12:16]])
    ap = adaptive_parameters(kept, group_size=4, batch_rewards=sampled)
    mu, sigma = statistics.fmean(sampled.tolist()), statistics.pstdev(sampled.tolist())
    assert ap.p.shape == (8,)
    assert_all(ap.mu, mu)
    assert_all(ap.sigma, sigma)
    assert_all(ap.p, math.exp(-0.8 * mu))
    assert_all(ap.eps_high, 0.2 + 0.2 * math.tanh(mu / (sigma + DELTA)), tol=1e-12)
    only_kept = adaptive_parameters(kept, group_size=4)
    assert_all(only_kept.mu, statistics.fmean(kept.tolist()))  # 0.625 vs 0.5625: not the same batch
    per_group = adaptive_parameters(kept, group_size=4, scope="group", batch_rewards=sampled)
    torch.testing.assert_close(per_group.mu, adaptive_parameters(kept, group_size=4, scope="group").mu)
    with pytest.raises(ValueError, match="group_size=4 must divide"):
        adaptive_parameters(kept, group_size=4, batch_rewards=sampled[:6])

    summary = rollout_reward_summary(sampled, kept, 4)
    assert summary["rollout/raw_reward_mean"] == pytest.approx(mu)
    assert summary["rollout/raw_reward_std"] == pytest.approx(sigma)
    assert summary["rollout/kept_raw_reward_mean"] == pytest.approx(0.625)
    assert summary["rollout/kept_raw_reward_std"] == pytest.approx(statistics.pstdev(kept.tolist()))
    assert (summary["rollout/num_groups"], summary["rollout/kept_num_groups"]) == (4, 2)
    assert (summary["rollout/groups_all_0"], summary["rollout/groups_all_1"]) == (1, 1)
    assert rollout_reward_summary(sampled, None, 4)["rollout/kept_num_groups"] == 0


def test_negative_mean_reward_is_clamped_for_fss_but_p_stays_in_range():
    r = rewards([-1, -1, 0, 0])
    ap = adaptive_parameters(r, 2, scope="batch")
    assert_all(ap.fss, 0.0)
    assert_all(ap.eps_high, 0.2)
    assert_all(ap.p, 1.0)  # exp(+0.4) is clamped to 1
    assert bool((ap.p > 0).all()) and bool((ap.p <= 1).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.bool])
def test_adaptive_accepts_low_precision_and_integer_rewards(dtype):
    r = torch.tensor([1, 0, 1, 0], dtype=dtype)
    ap = adaptive_parameters(r, 2)
    assert ap.p.dtype == torch.float32
    assert torch.allclose(ap.eps_high, torch.full((4,), 0.2 + 0.2 * math.tanh(1.0)), atol=1e-6)


def test_adaptive_parameters_are_detached():
    r = rewards([1.0, 0.0, 0.5, 0.25]).requires_grad_(True)
    ap = adaptive_parameters(r, 2)
    assert not ap.p.requires_grad and not ap.eps_high.requires_grad


# ----------------------------------------------------------------- group_advantages
def test_group_advantages_hand_computed_population_and_unbiased():
    r = rewards([1, 0, 0, 1])
    pop = group_advantages(r, 4)
    unb = group_advantages(r, 4, std="unbiased")
    a_pop = 0.5 / (0.5 + DELTA)
    a_unb = 0.5 / (math.sqrt(1 / 3) + DELTA)
    torch.testing.assert_close(pop, rewards([a_pop, -a_pop, -a_pop, a_pop]), rtol=1e-14, atol=0)
    torch.testing.assert_close(unb, rewards([a_unb, -a_unb, -a_unb, a_unb]), rtol=1e-14, atol=0)


@pytest.mark.parametrize("std", ["population", "unbiased"])
@pytest.mark.parametrize("group_size", [2, 5, 8])
def test_group_advantages_match_statistics_module(std, group_size):
    g = torch.Generator().manual_seed(group_size)
    r = torch.rand(3 * group_size, generator=g, dtype=F64)
    adv = group_advantages(r, group_size, std=std)
    values = r.tolist()
    expected = []
    for k in range(3):
        grp = values[k * group_size : (k + 1) * group_size]
        mu = statistics.fmean(grp)
        sd = statistics.pstdev(grp) if std == "population" else statistics.stdev(grp)
        expected += [(x - mu) / (sd + DELTA) for x in grp]
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=F64), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("value", [0.0, 1.0, 0.3, 0.1, 1e-7])
@pytest.mark.parametrize("dtype", [F64, torch.float32, torch.bfloat16])
def test_all_equal_groups_get_exactly_zero(value, dtype):
    # 0.1 and 0.3 are not exactly representable: their float mean may differ by an ulp.
    r = torch.tensor([value] * 7 + [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0], dtype=dtype)
    adv = group_advantages(r, 7)
    assert torch.equal(adv[:7], torch.zeros(7, dtype=adv.dtype))
    assert bool((adv[7:] != 0).all())


def test_group_size_one_gives_zero_advantages():
    adv = group_advantages(rewards([0.0, 1.0, 0.5]), 1)
    assert torch.equal(adv, torch.zeros(3, dtype=F64))
