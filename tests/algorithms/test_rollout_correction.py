"""Rollout correction in every loss, and the mismatch measurement, against float64 references.

The correction of a token average (docs/algorithms.md, "Rollout/trainer mismatch"): mean_t f_t ->
W_i * sum_t w_t f_t / sum_t w_t with W_i = mean_t w_t. For the power mean of APMPO that gives
J_i = A_i W_i [sum_t w_t x_t^p / sum_t w_t]^(1/p): GRPO's correction (OpenRLHF's per-token
coefficient) at p = 1 and the weighted geometric mean of GMPO's correction as p -> 0. The
references below are written from those formulas, loop over sequences and share no code with the
package.
"""

from __future__ import annotations

import math

import pytest
import torch

from apmpo_openrlhf.algorithms import (
    POLICY_LOSSES,
    apmpo_loss,
    correction_band,
    gmpo_loss,
    grpo_loss,
    gspo_loss,
    rollout_correction_weights,
    rollout_mismatch,
)

from .test_losses import assert_close, grad_of, make_batch

F64 = torch.float64


def make_weights(seed: int, mask: torch.Tensor, zeros: float = 0.2) -> torch.Tensor:
    """Positive IS weights around 1 (some far off), a fraction of them 0 (masked tokens)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.exp(0.4 * torch.randn(mask.shape, generator=g, dtype=F64))
    w = torch.where(torch.rand(mask.shape, generator=g) < zeros, torch.zeros_like(w), w)
    w[0, 0] = 1.7  # row 0 keeps a non-zero weight
    return w


def ref_apmpo_weighted(new, old, adv, mask, w, p, eps_high, eps_low=0.2):
    total = new.new_zeros(())
    for i in range(new.shape[0]):
        m = mask[i]
        r = torch.exp(new[i][m] - old[i][m])
        rho = torch.clamp(r, 1 - eps_low, 1 + eps_high)
        x = torch.minimum(r, rho) if adv[i] > 0 else torch.maximum(r, rho)
        wi = w[i][m]
        if float(wi.sum()) == 0:
            continue
        mass = wi.mean()
        total = total + adv[i] * mass * (torch.sum(wi * x**p) / torch.sum(wi)) ** (1.0 / p)
    return -total / new.shape[0]


def ref_gmpo_weighted(new, old, adv, mask, w, c=0.4):
    total = new.new_zeros(())
    for i in range(new.shape[0]):
        m = mask[i]
        log_r = new[i][m] - old[i][m]
        s = torch.sign(adv[i])
        l_tilde = s * torch.minimum(s * log_r, s * torch.clamp(log_r, -c, c))
        wi = w[i][m]
        if float(wi.sum()) == 0:
            continue
        total = total + adv[i] * wi.mean() * torch.exp(torch.sum(wi * l_tilde) / torch.sum(wi))
    return -total / new.shape[0]


def ref_grpo_weighted(new, old, adv, mask, w, eps=0.2):
    """OpenRLHF's form: the per-token clipped surrogate times the coefficient, per-sequence token mean."""
    total = new.new_zeros(())
    for i in range(new.shape[0]):
        m = mask[i]
        r = torch.exp(new[i][m] - old[i][m])
        total = total + torch.mean(w[i][m] * torch.minimum(r * adv[i], torch.clamp(r, 1 - eps, 1 + eps) * adv[i]))
    return -total / new.shape[0]


def ref_gspo_weighted(new, old, adv, mask, w, eps_low=3e-4, eps_high=4e-4):
    total = new.new_zeros(())
    for i in range(new.shape[0]):
        m = mask[i]
        wi = w[i][m]
        if float(wi.sum()) == 0:
            continue
        s = torch.exp(torch.sum(wi * (new[i][m] - old[i][m])) / torch.sum(wi))
        total = total + wi.mean() * torch.minimum(s * adv[i], torch.clamp(s, 1 - eps_low, 1 + eps_high) * adv[i])
    return -total / new.shape[0]


@pytest.mark.parametrize("p", [0.05, 0.449, 0.8, 1.0])
@pytest.mark.parametrize("seed", range(3))
def test_apmpo_with_weights_matches_its_definition(p, seed):
    new, old, adv, mask = make_batch(2000 + seed, scale=0.3)
    w = make_weights(2000 + seed, mask)
    loss, grad = grad_of(apmpo_loss, new, old, adv, mask, p=p, eps_high=0.3, is_weights=w)
    ref_loss, ref_grad = grad_of(ref_apmpo_weighted, new, old, adv, mask, w, p, 0.3)
    assert_close(loss, ref_loss)
    assert_close(grad, ref_grad)


@pytest.mark.parametrize("seed", range(4))
def test_apmpo_at_p_1_is_exactly_grpos_correction(seed):
    """p = 1: the corrected power mean is W_i * sum w x / sum w = mean_t w_t x_t, OpenRLHF's GRPO
    correction (values and gradients)."""
    new, old, adv, mask = make_batch(2100 + seed, scale=0.4)
    w = make_weights(2100 + seed, mask)
    loss, grad = grad_of(apmpo_loss, new, old, adv, mask, p=1.0, eps_high=0.2, is_weights=w)
    g_loss, g_grad = grad_of(grpo_loss, new, old, adv, mask, is_weights=w)
    ref_loss, ref_grad = grad_of(ref_grpo_weighted, new, old, adv, mask, w)
    assert_close(loss, g_loss)
    assert_close(grad, g_grad)
    assert_close(g_loss, ref_loss)
    assert_close(g_grad, ref_grad)


@pytest.mark.parametrize("p", [1e-4, 1e-6])
@pytest.mark.parametrize("seed", range(3))
def test_apmpo_tends_to_gmpos_correction_as_p_goes_to_0(p, seed):
    """p -> 0 with the clip bounds of GMPO's log clip c (eps_high = e^c - 1, eps_low = 1 - e^-c):
    A_i W_i exp(sum w l~ / sum w), GMPO's correction; the error shrinks like p."""
    c = 0.4
    new, old, adv, mask = make_batch(2200 + seed, scale=0.5)
    w = make_weights(2200 + seed, mask)
    loss, grad = grad_of(apmpo_loss, new, old, adv, mask, p=p, eps_high=math.expm1(c), eps_low=-math.expm1(-c),
                         is_weights=w)
    gm_loss, gm_grad = grad_of(gmpo_loss, new, old, adv, mask, clip=c, is_weights=w)
    ref_loss, ref_grad = grad_of(ref_gmpo_weighted, new, old, adv, mask, w, c)
    assert_close(gm_loss, ref_loss)
    assert_close(gm_grad, ref_grad)
    assert_close(loss, gm_loss, rtol=50 * p, atol=1e-12)
    assert_close(grad, gm_grad, rtol=50 * p, atol=50 * p * float(gm_grad.abs().max()))


def test_the_naive_weighted_power_mean_diverges_as_p_goes_to_0():
    """Why the sequence mass W_i stands outside: [mean_t w_t x_t^p]^(1/p) = W_i^(1/p) [sum w x^p / sum w]^(1/p),
    and W_i^(1/p) goes to 0 (W < 1) or infinity (W > 1) as p -> 0; the corrected form stays at GMPO's."""
    new, old, adv, mask = make_batch(2300, scale=0.3)
    w = make_weights(2300, mask, zeros=0.0) * 1.3  # W_i > 1 on most rows
    lengths = mask.sum(-1).to(F64)
    mass = (w * mask).sum(-1) / lengths
    assert float(mass.min()) > 1.05
    p = 0.01
    ours, _ = apmpo_loss(new.detach(), old, adv, mask, p=p, eps_high=0.3, is_weights=w)
    gm, _ = gmpo_loss(new.detach(), old, adv, mask, clip=math.log1p(0.3), is_weights=w)
    assert abs(float(ours) - float(gm)) < 0.05 * abs(float(gm)) + 1e-3
    x = torch.exp(new.detach() - old)  # the naive value of one sequence explodes with W^(1/p)
    naive_0 = (torch.sum(w[0][mask[0]] * x[0][mask[0]] ** p) / lengths[0]) ** (1 / p)
    assert float(naive_0) > 1e3 * float(mass[0] * torch.exp((w[0] * torch.log(x[0]) * mask[0]).sum() / (w[0] * mask[0]).sum()))


@pytest.mark.parametrize("seed", range(3))
def test_gmpo_and_gspo_with_weights_match_their_definitions(seed):
    new, old, adv, mask = make_batch(2400 + seed, scale=0.3)
    w = make_weights(2400 + seed, mask)
    loss, grad = grad_of(gmpo_loss, new, old, adv, mask, is_weights=w)
    ref_loss, ref_grad = grad_of(ref_gmpo_weighted, new, old, adv, mask, w)
    assert_close(loss, ref_loss)
    assert_close(grad, ref_grad)
    new, old, adv, mask = make_batch(2450 + seed, scale=3e-4)
    loss, grad = grad_of(gspo_loss, new, old, adv, mask, is_weights=w)
    ref_loss, ref_grad = grad_of(ref_gspo_weighted, new, old, adv, mask, w)
    assert_close(loss, ref_loss)
    assert_close(grad, ref_grad)


def _params(name: str, width: int) -> dict:
    from apmpo_openrlhf.config import TrainConfig

    cfg = TrainConfig()
    cfg = cfg.model_copy(update={"rollout": cfg.rollout.model_copy(update={"max_new_tokens": width})})
    params = POLICY_LOSSES[name].parameters(cfg)
    if POLICY_LOSSES[name].adaptive:
        params.update(p=0.6, eps_high=0.3)
    return params


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_unit_weights_change_nothing_and_zero_weights_remove_tokens(name):
    new, old, adv, mask = make_batch(2500, scale=0.2)
    params = _params(name, mask.shape[1])
    plain, g_plain = grad_of(POLICY_LOSSES[name], new, old, adv, mask, **params)
    ones, g_ones = grad_of(POLICY_LOSSES[name], new, old, adv, mask, **params, is_weights=torch.ones_like(old))
    assert_close(ones, plain)
    assert_close(g_ones, g_plain)
    # a zero weight: the token gets no gradient (the other tokens still do)
    w = torch.ones_like(old)
    w[:, 1] = 0.0
    _, g = grad_of(POLICY_LOSSES[name], new, old, adv, mask, **params, is_weights=w)
    assert bool((g[:, 1] == 0).all()) and float(g.abs().sum()) > 0
    # a fully masked sequence contributes nothing, finite
    w[2] = 0.0
    loss, g = grad_of(POLICY_LOSSES[name], new, old, adv, mask, **params, is_weights=w)
    assert torch.isfinite(loss) and bool(torch.isfinite(g).all()) and bool((g[2] == 0).all())


def test_weights_follow_openrlhfs_gates():
    g = torch.Generator().manual_seed(2600)
    old = -2.0 * torch.rand(5, 7, generator=g, dtype=F64)
    rollout = old + 0.8 * torch.randn(5, 7, generator=g, dtype=F64)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[4, 3:] = False
    ratio = torch.exp(old - rollout)
    tis, frac = rollout_correction_weights(old, rollout, mask, "token", "clip", "ratio", [0.5, 2.0])
    assert_close(tis, torch.where(mask, ratio.clamp(0.5, 2.0), 0.0))
    assert float(frac) == pytest.approx(float((((ratio < 0.5) | (ratio > 2.0)) & mask).sum() / mask.sum()))
    icepop, _ = rollout_correction_weights(old, rollout, mask, "token", "mask", "ratio", [0.5, 2.0])
    assert_close(icepop, torch.where(mask & (ratio >= 0.5) & (ratio <= 2.0), ratio, 0.0))
    seq, frac = rollout_correction_weights(old, rollout, mask, "seq", "mask", "ratio", [0.8, 1.25])
    geo = torch.exp(((old - rollout) * mask).sum(-1) / mask.sum(-1))
    keep = (geo >= 0.8) & (geo <= 1.25)
    assert_close(seq, torch.where(mask & keep.unsqueeze(-1), ratio, 0.0))
    assert float(frac) == pytest.approx(float((~keep).double().mean()))
    tv, _ = rollout_correction_weights(old, rollout, mask, "token", "mask", "tv", [0.05])
    diff = (torch.exp(rollout) - torch.exp(old)).abs()
    assert_close(tv, torch.where(mask & (diff <= 0.05), ratio, 0.0))


def test_mismatch_metrics_are_the_literal_statistics():
    g = torch.Generator().manual_seed(2700)
    old = -3.0 * torch.rand(4, 9, generator=g, dtype=F64)
    rollout = old + 0.5 * torch.randn(4, 9, generator=g, dtype=F64)
    mask = torch.rand(4, 9, generator=g) < 0.8
    stats = rollout_mismatch(old, torch.where(mask, rollout, 1e9), mask)  # padding is ignored
    d = (old - rollout)[mask]
    rho = torch.exp(d)
    assert stats["vllm_kl"] == pytest.approx(float((-d).mean()), rel=1e-12)
    assert stats["mismatch/kl_k3"] == pytest.approx(float((rho - 1 - d).mean()), rel=1e-12)
    assert stats["mismatch/log_ratio_abs_mean"] == pytest.approx(float(d.abs().mean()), rel=1e-12)
    assert stats["mismatch/log_ratio_abs_max"] == pytest.approx(float(d.abs().max()), rel=1e-12)
    assert stats["mismatch/ratio_outside_2x"] == pytest.approx(float(((rho < 0.5) | (rho > 2)).double().mean()))
    assert stats["mismatch/kl_k3"] > 0
    same = rollout_mismatch(old, old.clone(), mask)
    assert all(v == 0.0 for v in same.values())


@pytest.mark.parametrize(
    "options, word",
    [
        (("seq", "clip", "ratio", [0.5, 2.0]), "level='token'"),
        (("token", "clip", "tv", [0.1]), "gating='ratio'"),
        (("token", "mask", "binary_kl", [0.1, 0.5]), "from above only"),
        (("token", "mask", "ratio", [1.5, 3.0]), "must contain 1"),
        (("token", "mask", "ratio", [2.0, 1.0]), "high must be > low"),
        (("token", "mask", "ratio", [0.5, 1.0, 2.0]), "[high]"),
        (("both", "mask", "ratio", [0.5, 2.0]), "level"),
    ],
)
def test_nonsense_corrections_are_refused(options, word):
    with pytest.raises(ValueError) as info:
        correction_band(*options)
    assert word in str(info.value)
