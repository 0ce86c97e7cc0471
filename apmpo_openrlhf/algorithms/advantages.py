"""Group-normalised advantages (SPEC.md 2, paper Eq. 2), shared by every loss but Dr. GRPO (centred only)."""

from __future__ import annotations

import torch

from ._validation import check_choice, check_group_size, check_range

STD_MODES = ("population", "unbiased")


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else (bf16, fp16, fp32, ints) is computed in float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    std: str = "population",
    delta: float = 1e-6,
    scale: bool = True,
) -> torch.Tensor:
    """A_i = (R_i - mu_g) / (sigma_g + delta) for each prompt group g (``scale=False``: R_i - mu_g,
    Dr. GRPO's advantage without the std normalisation).

    Args:
        rewards: 1-D tensor; consecutive ``group_size`` entries are the responses of one prompt.
        group_size: responses per prompt (G).
        std: ``"population"`` (Algorithm 1 of the paper, default) or ``"unbiased"`` (Bessel).
        delta: added to the std so that a zero-variance group does not divide by zero.
        scale: divide by sigma_g + delta (SPEC.md 2); False keeps the centred rewards.

    Returns:
        Per-sample advantages, same length as ``rewards`` (float32, or float64 for float64 input).
        A group whose rewards are all equal gets exactly 0 for every member (no rounding residue).
    """
    check_group_size(rewards, group_size)
    check_choice("std", std, STD_MODES)
    check_range("delta", delta, 0.0, None, low_inclusive=False)

    r = rewards.detach().to(compute_dtype(rewards)).view(-1, group_size)
    mu = r.mean(dim=-1, keepdim=True)
    if not scale:
        adv = r - mu
    else:
        if group_size == 1:
            sigma = torch.zeros_like(mu)
        else:
            sigma = r.std(dim=-1, keepdim=True, correction=0 if std == "population" else 1)
        adv = (r - mu) / (sigma + delta)
    # The mean of equal floats can differ from them by one ulp; force exact zeros for such groups.
    all_equal = (r == r[:, :1]).all(dim=-1, keepdim=True)
    adv = torch.where(all_equal, torch.zeros_like(adv), adv)
    return adv.reshape(-1)
