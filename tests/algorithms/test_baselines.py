"""GSPO, Dr. GRPO and CISPO against float64 references written literally from their papers.

GSPO: arXiv 2507.18071, Eq. 5-7 (sequence ratio s_i = (pi(y_i)/pi_old(y_i))^(1/|y_i|), clipped at the
sequence level, 3e-4 / 4e-4). Dr. GRPO: arXiv 2503.20783, Sec. 3.2 (advantage R_i - mean(R), no
1/|o_i|, a constant normaliser). CISPO: MiniMax-M1, arXiv 2506.13585, Eq. 4-5 (sg(clip(r)) A log pi,
token-level 1/sum_i |o_i|). The references loop over sequences with the papers' symbols and share no
code with apmpo_openrlhf.algorithms.
"""

from __future__ import annotations

import pytest
import torch

from apmpo_openrlhf.algorithms import (
    POLICY_LOSSES,
    cispo_loss,
    dapo_loss,
    drgrpo_loss,
    get_policy_loss,
    group_advantages,
    grpo_loss,
    gspo_loss,
    kl_penalty,
)

from .test_losses import assert_close, grad_of, make_batch

F64 = torch.float64


def ref_gspo(new, old, adv, mask, eps_low=3e-4, eps_high=4e-4):
    """GSPO Eq. 5: -(1/G) sum_i min(s_i A_i, clip(s_i, 1 - eps_l, 1 + eps_r) A_i), s_i Eq. 7."""
    total = new.new_zeros(())
    for i in range(new.shape[0]):
        m = mask[i]
        pi, pi_old = torch.exp(new[i][m]), torch.exp(old[i][m])
        s = (torch.prod(pi) / torch.prod(pi_old)) ** (1.0 / int(m.sum()))
        total = total + torch.minimum(s * adv[i], torch.clamp(s, 1 - eps_low, 1 + eps_high) * adv[i])
    return -total / new.shape[0]


def ref_drgrpo(new, old, adv, mask, budget, eps=0.2):
    """Dr. GRPO: -(1/G) sum_i (1/L) sum_t min(r A_i, clip(r, 1 - eps, 1 + eps) A_i) (no 1/|o_i|)."""
    total = new.new_zeros(())
    for i in range(new.shape[0]):
        m = mask[i]
        r = torch.exp(new[i][m] - old[i][m])
        total = total + torch.sum(torch.minimum(r * adv[i], torch.clamp(r, 1 - eps, 1 + eps) * adv[i])) / budget
    return -total / new.shape[0]


def ref_cispo(new, old, adv, mask, eps_high=0.28, eps_low=None):
    """CISPO Eq. 4-5: -(1/sum_i |o_i|) sum_i sum_t sg(r^_{i,t}) A_i log pi_theta(o_{i,t}),
    r^ = clip(r, 1 - eps_low, 1 + eps_high); the paper sets no lower bound (eps_low "large")."""
    total = new.new_zeros(())
    count = 0
    for i in range(new.shape[0]):
        m = mask[i]
        r = torch.exp(new[i][m] - old[i][m])
        low = 0.0 if eps_low is None else 1 - eps_low
        r_hat = torch.clamp(r, low, 1 + eps_high).detach()
        total = total + torch.sum(r_hat * adv[i] * new[i][m])
        count += int(m.sum())
    return -total / count


@pytest.mark.parametrize("eps", [(3e-4, 4e-4), (0.2, 0.2)])
@pytest.mark.parametrize("scale", [1e-4, 0.05])
@pytest.mark.parametrize("seed", range(3))
def test_gspo_matches_eq_5(eps, scale, seed):
    new, old, adv, mask = make_batch(1300 + seed, scale=scale)
    loss, grad = grad_of(gspo_loss, new, old, adv, mask, eps_low=eps[0], eps_high=eps[1])
    ref_loss, ref_grad = grad_of(ref_gspo, new, old, adv, mask, *eps)
    assert_close(loss, ref_loss)
    assert_close(grad, ref_grad)


def test_gspo_clips_whole_sequences():
    """A sequence whose ratio s leaves the band (on the side the clip acts) loses the gradient of
    every token; inside the band every token gets A s / (N |y|) (GSPO Eq. 10)."""
    new, old, adv, mask = make_batch(1310, scale=1e-5)
    adv = adv.abs()
    with torch.no_grad():
        new[0] = old[0] + 1e-3  # s = e^1e-3 > 1 + 4e-4, A > 0: clipped
    loss, grad = grad_of(gspo_loss, new, old, adv, mask)
    assert bool((grad[0] == 0).all())
    lengths = mask.sum(-1).to(F64)
    s = torch.exp(((new - old) * mask).sum(-1) / lengths).detach()
    expected = -(adv * s / lengths / new.shape[0]).unsqueeze(-1) * mask
    assert_close(grad[1:], expected[1:])
    _, metrics = gspo_loss(new.detach(), old, adv, mask)
    assert float(metrics["clip_frac_high"]) == pytest.approx(int(mask[0].sum()) / int(mask.sum()))


@pytest.mark.parametrize("budget", [12, 40])
@pytest.mark.parametrize("seed", range(3))
def test_drgrpo_matches_the_paper(budget, seed):
    new, old, adv, mask = make_batch(1400 + seed, scale=0.4)
    loss, grad = grad_of(drgrpo_loss, new, old, adv, mask, token_budget=budget)
    ref_loss, ref_grad = grad_of(ref_drgrpo, new, old, adv, mask, budget)
    assert_close(loss, ref_loss)
    assert_close(grad, ref_grad)
    # Dr. GRPO = DAPO's token sum with the constant N * L in place of the token count
    assert_close(loss, dapo_loss(new.detach(), old, adv, mask, eps_high=0.2, num_tokens=new.shape[0] * budget)[0])


def test_drgrpo_advantages_are_centred_rewards():
    """Dr. GRPO's advantage is R_i - mean_g R (no division by std_g), from the registry entry."""
    rewards = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1], dtype=F64)
    adv = get_policy_loss("drgrpo").advantages(rewards, 4)
    expected = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.25, 0.25, -0.75, 0.25, 0, 0, 0, 0], dtype=F64)
    assert_close(adv, expected)
    assert_close(get_policy_loss("grpo").advantages(rewards, 4), group_advantages(rewards, 4))
    assert not torch.allclose(get_policy_loss("grpo").advantages(rewards, 4), expected)


@pytest.mark.parametrize("eps", [(0.28, None), (0.2, 0.2), (4.0, None)])
@pytest.mark.parametrize("seed", range(3))
def test_cispo_matches_eq_4(eps, seed):
    new, old, adv, mask = make_batch(1500 + seed, scale=0.4)
    loss, grad = grad_of(cispo_loss, new, old, adv, mask, eps_high=eps[0], eps_low=eps[1])
    ref_loss, ref_grad = grad_of(ref_cispo, new, old, adv, mask, *eps)
    assert_close(loss, ref_loss)
    assert_close(grad, ref_grad)


def test_cispo_keeps_the_gradient_of_tokens_ppo_clips():
    """The point of CISPO: a token with r > 1 + eps and A > 0 (clipped, zero gradient in PPO/DAPO)
    still gets the gradient (1 + eps) A / T, only its weight is truncated."""
    new, old, adv, mask = make_batch(1510, scale=0.05)
    adv = adv.abs()
    with torch.no_grad():
        new[0, 0] = old[0, 0] + 1.0  # r = e > 1.28
    _, g_cispo = grad_of(cispo_loss, new, old, adv, mask)
    _, g_dapo = grad_of(dapo_loss, new, old, adv, mask)
    count = int(mask.sum())
    assert float(g_dapo[0, 0]) == 0.0
    assert float(g_cispo[0, 0]) == pytest.approx(-1.28 * float(adv[0]) / count, rel=1e-12)
    _, metrics = cispo_loss(new.detach(), old, adv, mask)
    assert float(metrics["clip_frac_high"]) > 0 and float(metrics["clip_frac_low"]) == 0.0


def test_on_policy_gradients_of_the_new_baselines():
    """r = 1: GSPO's gradient is GRPO's (A_i / (N |y_i|) per token), CISPO's and Dr. GRPO's are the
    token-level A_i / T and A_i / (N L)."""
    new, _, adv, mask = make_batch(1600)
    old = new.detach().clone()
    lengths = mask.sum(-1, keepdim=True).to(F64)
    n, count = new.shape[0], int(mask.sum())
    _, g_grpo = grad_of(grpo_loss, new, old, adv, mask)
    _, g_gspo = grad_of(gspo_loss, new, old, adv, mask)
    assert_close(g_gspo, g_grpo)
    assert_close(g_grpo, torch.where(mask, -(adv.unsqueeze(-1) / lengths) / n, torch.zeros_like(new)))
    _, g_cispo = grad_of(cispo_loss, new, old, adv, mask)
    assert_close(g_cispo, torch.where(mask, -adv.unsqueeze(-1) / count, torch.zeros_like(new)))
    _, g_dr = grad_of(drgrpo_loss, new, old, adv, mask, token_budget=30)
    assert_close(g_dr, torch.where(mask, -adv.unsqueeze(-1) / (n * 30), torch.zeros_like(new)))


def test_budget_kl_is_the_token_sum_over_sequences_times_budget():
    new, old, _, mask = make_batch(1700)
    kl = kl_penalty(new.detach(), old, mask, aggregation="budget", num_sequences=10, token_budget=7)
    per_token = torch.where(mask, torch.expm1(old - new.detach()) + (new.detach() - old), torch.zeros_like(old))
    assert_close(kl, per_token.sum() / 70)
    with pytest.raises(ValueError, match="token_budget"):
        kl_penalty(new.detach(), old, mask, aggregation="budget")


class _Config:
    """The attributes the registry reads (a stand-in for the pydantic TrainConfig)."""

    def __init__(self, **algorithm):
        from apmpo_openrlhf.config import TrainConfig

        base = TrainConfig()
        self.algorithm = base.algorithm.model_copy(update=algorithm)
        self.rollout = base.rollout


def test_entries_read_their_parameters_from_the_config():
    defaults = {name: e.parameters(_Config()) for name, e in POLICY_LOSSES.items()}
    assert defaults["grpo"] == {"eps_low": 0.2, "eps_high": 0.2}
    assert defaults["dapo"] == {"eps_low": 0.2, "eps_high": 0.28}
    assert defaults["gspo"] == {"eps_low": 3e-4, "eps_high": 4e-4}
    assert defaults["cispo"] == {"eps_high": 0.28, "eps_low": None}
    assert defaults["drgrpo"] == {"eps_low": 0.2, "eps_high": 0.2, "token_budget": 3072}  # rollout.max_new_tokens
    assert get_policy_loss("drgrpo").parameters(_Config(drgrpo_token_budget=100))["token_budget"] == 100
    assert get_policy_loss("gspo").reported(defaults["gspo"]) == (0.0, 4e-4)


class _Recorder:
    def __init__(self, target, prefix=""):
        self._target, self._prefix, self.seen = target, prefix, set()

    def __getattr__(self, name):
        self.seen.add(self._prefix + name)
        return getattr(self._target, name)


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_reads_lists_exactly_the_keys_the_parameters_use(name):
    """An entry's ``reads`` (what the schema checks) matches what ``parameters`` really reads."""
    entry = get_policy_loss(name)
    cfg = _Config()
    recorder = _Recorder(cfg.algorithm)
    entry.parameters(type("C", (), {"algorithm": recorder, "rollout": cfg.rollout})())
    shared = {"advantage_std", "advantage_delta", "adaptive"}  # read by the backends, not by parameters()
    assert recorder.seen == set(entry.reads) - shared
    assert ({"advantage_std", "advantage_delta"} <= set(entry.reads)) == entry.advantage_std
    assert ("adaptive" in entry.reads) == entry.adaptive
