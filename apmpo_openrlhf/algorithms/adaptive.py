"""Adaptive statistics of APMPO (SPEC.md 3): the power-mean exponent p (PMPO, Eq. 4 / Eq. 11)
and the upper clip bound eps_high (FAC, Eq. 5-6), both driven by the reward distribution."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._validation import check_choice, check_group_size, check_range
from .advantages import compute_dtype

SCOPES = ("batch", "group")
P_SCHEDULES = ("exp", "linear", "fixed")
FSS_MODES = ("full", "mu", "inv_sigma")
EPS_SCHEDULES = ("tanh", "linear", "fixed")


@dataclass(frozen=True)
class AdaptiveParameters:
    """Per-sample tensors (length = number of rewards). All are detached constants for the gradient.

    With ``scope="batch"`` every entry is the same value; they are still per-sample so that the
    batch can be split across ranks and micro-batches without recomputing anything.
    """

    p: torch.Tensor
    eps_high: torch.Tensor
    fss: torch.Tensor
    mu: torch.Tensor
    sigma: torch.Tensor

    def summary(self) -> dict[str, float]:
        """Means over samples, for logging."""
        return {
            "p": float(self.p.mean()),
            "eps_high": float(self.eps_high.mean()),
            "fss": float(self.fss.mean()),
            "mu_R": float(self.mu.mean()),
            "sigma_R": float(self.sigma.mean()),
        }


def validate_adaptive_options(
    scope: str = "batch",
    gamma: float = 0.8,
    p_schedule: str = "exp",
    p_fixed: float = 1.0,
    p_min: float = 0.05,
    fss: str = "full",
    eps_schedule: str = "tanh",
    eps_min: float = 0.2,
    eps_max: float = 0.4,
    eps_fixed: float = 0.2,
    delta: float = 1e-6,
) -> None:
    """Raise ValueError naming the first invalid option (also used by config validation)."""
    check_choice("scope", scope, SCOPES)
    check_choice("p_schedule", p_schedule, P_SCHEDULES)
    check_choice("fss", fss, FSS_MODES)
    check_choice("eps_schedule", eps_schedule, EPS_SCHEDULES)
    check_range("gamma", gamma, 0.0, None)
    check_range("p_fixed", p_fixed, 0.0, 1.0, low_inclusive=False)
    check_range("p_min", p_min, 0.0, 1.0, low_inclusive=False)
    check_range("eps_min", eps_min, 0.0, None)
    check_range("eps_max", eps_max, 0.0, None)
    if eps_min > eps_max:
        raise ValueError(f"eps_min={eps_min} must be <= eps_max={eps_max}")
    check_range("eps_fixed", eps_fixed, 0.0, None)
    check_range("delta", delta, 0.0, None, low_inclusive=False)


def adaptive_parameters(
    rewards: torch.Tensor,
    group_size: int,
    scope: str = "batch",
    gamma: float = 0.8,
    p_schedule: str = "exp",
    p_fixed: float = 1.0,
    p_min: float = 0.05,
    fss: str = "full",
    eps_schedule: str = "tanh",
    eps_min: float = 0.2,
    eps_max: float = 0.4,
    eps_fixed: float = 0.2,
    delta: float = 1e-6,
    batch_rewards: torch.Tensor | None = None,
) -> AdaptiveParameters:
    """Compute p and eps_high from raw rewards (before any length shaping).

    Args:
        rewards: 1-D raw rewards; consecutive ``group_size`` entries form one prompt group. The
            result has one entry per reward.
        scope: ``"batch"`` (Eq. 4-5: statistics over the whole rollout batch, default) or
            ``"group"`` (Algorithm 1: statistics per prompt group).
        batch_rewards: for ``scope="batch"``, the raw rewards whose mean and std give mu_R and
            sigma_R (default: ``rewards``). With dynamic filtering, ``rewards`` are the kept groups
            and ``batch_rewards`` every group sampled for the step (``algorithm.adaptive_statistics:
            sampled``). Ignored by ``scope="group"``: a kept group's statistics are its own.
        gamma: sensitivity of p to the mean reward.
        p_schedule: ``"exp"`` p = exp(-gamma mu) (Eq. 4), ``"linear"`` p = clamp(1 - gamma mu,
            p_min, 1) (Eq. 11), ``"fixed"`` p = p_fixed (1 turns PMPO off).
        fss: Feedback Stability Score: ``"full"`` mu / (sigma + delta) (Eq. 5), ``"mu"`` mu,
            ``"inv_sigma"`` 1 / (sigma + delta). mu is clamped at 0.
        eps_schedule: ``"tanh"`` eps_min + (eps_max - eps_min) tanh(FSS) (Eq. 6), ``"linear"``
            min(eps_max, eps_min + (eps_max - eps_min) FSS) (Algorithm 1), ``"fixed"`` eps_fixed.
        delta: numerical-stability constant of Eq. 5.

    Returns:
        AdaptiveParameters with per-sample ``p``, ``eps_high``, ``fss``, ``mu``, ``sigma``.
    """
    check_group_size(rewards, group_size)
    validate_adaptive_options(
        scope, gamma, p_schedule, p_fixed, p_min, fss, eps_schedule, eps_min, eps_max, eps_fixed, delta
    )

    r = rewards.detach().to(compute_dtype(rewards))
    if scope == "batch":
        if batch_rewards is not None:
            check_group_size(batch_rewards, group_size)
        source = r if batch_rewards is None else batch_rewards.detach().to(r.device, r.dtype)
        grouped = source.view(1, -1)
    else:
        grouped = r.view(-1, group_size)
    mu = grouped.mean(dim=-1, keepdim=True)
    sigma = grouped.std(dim=-1, keepdim=True, correction=0)  # population std (SPEC.md 3)
    mu_pos = mu.clamp(min=0.0)

    if p_schedule == "exp":
        # Rewards in [0, 1] keep p in [exp(-gamma), 1]; the clamp only guards negative rewards.
        p = torch.exp(-gamma * mu).clamp(max=1.0)
    elif p_schedule == "linear":
        p = (1.0 - gamma * mu).clamp(min=p_min, max=1.0)
    else:
        p = torch.full_like(mu, p_fixed)
    # exp(-gamma mu) underflows to 0 only for absurd rewards; keep p strictly positive.
    p = p.clamp(min=torch.finfo(p.dtype).tiny)

    if fss == "full":
        score = mu_pos / (sigma + delta)
    elif fss == "mu":
        score = mu_pos
    else:
        score = 1.0 / (sigma + delta)

    if eps_schedule == "tanh":
        eps_high = eps_min + (eps_max - eps_min) * torch.tanh(score)
    elif eps_schedule == "linear":
        eps_high = (eps_min + (eps_max - eps_min) * score).clamp(max=eps_max)
    else:
        eps_high = torch.full_like(mu, eps_fixed)

    per_group = r.numel() // grouped.shape[0]  # scope batch: one row, expanded to every reward

    def expand(t: torch.Tensor) -> torch.Tensor:
        return t.expand(-1, per_group).reshape(-1).contiguous()

    return AdaptiveParameters(
        p=expand(p), eps_high=expand(eps_high), fss=expand(score), mu=expand(mu), sigma=expand(sigma)
    )



def rollout_reward_summary(sampled: torch.Tensor, kept: torch.Tensor | None, group_size: int) -> dict[str, float]:
    """Per-step raw-reward statistics of both batches, for logging (same keys in both backends).

    ``sampled``: every group sampled for the step (before dynamic filtering); ``kept``: the groups
    that were trained on (None if none was kept). Without filtering both are the rollout batch.
    """
    check_group_size(sampled, group_size)
    groups = sampled.detach().float().view(-1, group_size)
    out = {
        "rollout/raw_reward_mean": float(groups.mean()),
        "rollout/raw_reward_std": float(groups.std(correction=0)),
        "rollout/num_groups": float(groups.shape[0]),
        "rollout/groups_all_0": float((groups <= 0).all(dim=-1).sum()),
        "rollout/groups_all_1": float((groups >= 1).all(dim=-1).sum()),
        "rollout/kept_num_groups": 0.0,
    }
    if kept is not None and kept.numel():
        check_group_size(kept, group_size)
        k = kept.detach().float()
        out.update({
            "rollout/kept_raw_reward_mean": float(k.mean()),
            "rollout/kept_raw_reward_std": float(k.std(correction=0)),
            "rollout/kept_num_groups": float(k.numel() // group_size),
        })
    return out
