"""KL(pi_theta || pi_ref) as a loss term (SPEC.md 4: beta = 0.001, k3 estimator)."""

from __future__ import annotations

import torch

from ._validation import check_choice, check_range

KL_ESTIMATORS = ("k1", "k2", "k3")
KL_AGGREGATIONS = ("sequence", "token")


def kl_penalty(
    log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    action_mask: torch.Tensor,
    estimator: str = "k3",
    aggregation: str = "sequence",
    num_sequences: int | float | torch.Tensor | None = None,
    num_tokens: int | float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token KL estimate aggregated like the policy term it is added to.

    k1 = log(pi/pi_ref), k2 = (log(pi/pi_ref))^2 / 2, k3 = exp(-d) - 1 + d with d = log pi - log pi_ref
    (Schulman's unbiased, non-negative estimator; GRPO's choice). ``aggregation="sequence"``
    averages tokens within each sequence and divides the sum by ``num_sequences`` (GRPO, GMPO,
    APMPO); ``"token"`` divides the token sum by ``num_tokens`` (DAPO). Multiply by beta outside.
    """
    check_choice("estimator", estimator, KL_ESTIMATORS)
    check_choice("aggregation", aggregation, KL_AGGREGATIONS)
    if ref_log_probs.shape != log_probs.shape or action_mask.shape != log_probs.shape:
        raise ValueError(
            f"log_probs {tuple(log_probs.shape)}, ref_log_probs {tuple(ref_log_probs.shape)} and "
            f"action_mask {tuple(action_mask.shape)} must have the same shape [N, T]"
        )
    dtype = torch.float64 if log_probs.dtype == torch.float64 else torch.float32
    mask = action_mask.bool()
    d = torch.where(mask, log_probs.to(dtype) - ref_log_probs.detach().to(dtype), torch.zeros((), dtype=dtype))
    # Same numerical guard as the policy losses: exp(-d) must stay finite.
    d = d.clamp(-20.0, 20.0)
    if estimator == "k1":
        kl = d
    elif estimator == "k2":
        kl = 0.5 * d * d
    else:
        kl = torch.expm1(-d) + d
    kl = torch.where(mask, kl, torch.zeros_like(kl))
    if aggregation == "token":
        divisor = mask.sum().clamp(min=1) if num_tokens is None else num_tokens
        if num_tokens is not None:
            check_range("num_tokens", float(num_tokens), 0.0, None, low_inclusive=False)
        return kl.sum() / divisor
    per_seq = kl.sum(-1) / mask.sum(-1).clamp(min=1)
    if num_sequences is not None:
        check_range("num_sequences", float(num_sequences), 0.0, None, low_inclusive=False)
    return per_seq.sum() / (per_seq.shape[0] if num_sequences is None else num_sequences)
