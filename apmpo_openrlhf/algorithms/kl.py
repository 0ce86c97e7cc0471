"""KL(pi_theta || pi_ref) as a loss term (SPEC.md 4: beta = 0.001, k3 estimator).

One definition for both backends: the local trainer calls :func:`kl_penalty`; the OpenRLHF actor
puts :func:`kl_per_token` in place of OpenRLHF's ``compute_approx_kl`` and aggregates it like the
policy term. The estimators are exact: the log-ratio d is clamped at +-20 only so that exp(-d)
stays finite (OpenRLHF's own estimator clamps the k3 *value* at 10, which zeroes its gradient for
every token with d < -2.53; see docs/algorithms.md).
"""

from __future__ import annotations

import torch

from ._validation import check_choice, check_range

KL_ESTIMATORS = ("k1", "k2", "k3")
KL_AGGREGATIONS = ("sequence", "token", "budget")
# |log pi - log pi_ref| beyond this is clamped before exp(-d): e^20 ~ 5e8 is finite in fp32 and
# fp16-safe after the fp32 upcast; such tokens still get a (large) restoring gradient.
MAX_ABS_KL_LOG_RATIO = 20.0


def kl_per_token(
    log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    action_mask: torch.Tensor,
    estimator: str = "k3",
) -> torch.Tensor:
    """Per-token KL estimate [N, T] in fp32 (fp64 stays fp64), exactly 0 on padding.

    k1 = d, k2 = d^2 / 2, k3 = exp(-d) - 1 + d with d = log pi - log pi_ref (Schulman's unbiased,
    non-negative estimator; GRPO's choice). ``ref_log_probs`` is a constant for the gradient.
    """
    check_choice("estimator", estimator, KL_ESTIMATORS)
    if ref_log_probs.shape != log_probs.shape or action_mask.shape != log_probs.shape:
        raise ValueError(
            f"log_probs {tuple(log_probs.shape)}, ref_log_probs {tuple(ref_log_probs.shape)} and "
            f"action_mask {tuple(action_mask.shape)} must have the same shape [N, T]"
        )
    dtype = torch.float64 if log_probs.dtype == torch.float64 else torch.float32
    mask = action_mask.bool()
    d = torch.where(mask, log_probs.to(dtype) - ref_log_probs.detach().to(dtype), torch.zeros((), dtype=dtype))
    d = d.clamp(-MAX_ABS_KL_LOG_RATIO, MAX_ABS_KL_LOG_RATIO)
    if estimator == "k1":
        kl = d
    elif estimator == "k2":
        kl = 0.5 * d * d
    else:
        kl = torch.expm1(-d) + d
    return torch.where(mask, kl, torch.zeros_like(kl))


def kl_penalty(
    log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor,
    action_mask: torch.Tensor,
    estimator: str = "k3",
    aggregation: str = "sequence",
    num_sequences: int | float | torch.Tensor | None = None,
    num_tokens: int | float | torch.Tensor | None = None,
    token_budget: int | float | None = None,
) -> torch.Tensor:
    """:func:`kl_per_token` aggregated like the policy term it is added to.

    ``aggregation="sequence"`` averages tokens within each sequence and divides the sum by
    ``num_sequences`` (GRPO, GMPO, APMPO, GSPO); ``"token"`` divides the token sum by ``num_tokens``
    (DAPO, CISPO); ``"budget"`` divides the token sum by ``num_sequences * token_budget`` (Dr. GRPO's
    constant normaliser). Multiply by beta outside.
    """
    check_choice("aggregation", aggregation, KL_AGGREGATIONS)
    kl = kl_per_token(log_probs, ref_log_probs, action_mask, estimator)
    mask = action_mask.bool()
    if aggregation == "token":
        divisor = mask.sum().clamp(min=1) if num_tokens is None else num_tokens
        if num_tokens is not None:
            check_range("num_tokens", float(num_tokens), 0.0, None, low_inclusive=False)
        return kl.sum() / divisor
    if num_sequences is not None:
        check_range("num_sequences", float(num_sequences), 0.0, None, low_inclusive=False)
    n = kl.shape[0] if num_sequences is None else num_sequences
    if aggregation == "budget":
        if token_budget is None:
            raise ValueError("token_budget is required with aggregation='budget'")
        check_range("token_budget", float(token_budget), 0.0, None, low_inclusive=False)
        return kl.sum() / (n * token_budget)
    per_seq = kl.sum(-1) / mask.sum(-1).clamp(min=1)
    return per_seq.sum() / n
