"""Rollout/trainer mismatch: how far the sampler's log-probs are from the trainer's, and the
importance weights that correct for it (docs/algorithms.md, "Rollout/trainer mismatch").

The rollout engine (vLLM; bf16 kernels, its own sampler with top-p) samples from pi_rollout, while
the ratio r = pi_theta / pi_old of every loss is taken against pi_old, the trainer's own forward
on the same tokens. The sample is then off-policy for pi_old by w_t = pi_old(y_t) / pi_rollout(y_t).

:func:`rollout_correction_weights` gives the per-token coefficients of OpenRLHF 0.11.2's
``is_correction_*`` options (``openrlhf/models/loss.py`` ``PolicyLoss``), with the same meaning
and the same results: ``level`` token or seq (the gate reads each token's statistic or the
sequence mean), ``mode`` mask (drop out-of-band units; the survivors keep their per-token weight:
ICEPOP, sequence masking) or clip (clamp the token weight into the band: truncated IS, TIS),
``gating`` ratio (the weight itself) or the sampled-token binary_kl / tv divergence (a trust
region, an upper bound only). How a loss applies them: losses.py (``is_weights``).
:func:`rollout_mismatch` gives the per-step measurement both backends log.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ._validation import check_choice, check_range

CORRECTION_LEVELS = ("off", "token", "seq")
CORRECTION_MODES = ("mask", "clip")
CORRECTION_GATINGS = ("ratio", "binary_kl", "tv")
# |log pi_old - log pi_rollout| beyond this is clamped before exp (e^20 ~ 5e8, finite in fp32);
# such a token is far outside every useful band anyway.
MAX_ABS_IS_LOG_RATIO = 20.0
# A token counts as badly mismatched when pi_old / pi_rollout lies outside [1/2, 2].
MISMATCH_RATIO_BAND = 2.0

MISMATCH_METRICS = (
    "vllm_kl",  # OpenRLHF's name and definition: mean(log pi_rollout - log pi_old), k1 of KL(rollout || old)
    "mismatch/kl_k3",  # k3 = rho - 1 - log rho, rho = pi_old / pi_rollout: the same KL, never negative
    "mismatch/log_ratio_abs_mean",
    "mismatch/log_ratio_abs_max",
    "mismatch/ratio_outside_2x",  # fraction of tokens with rho outside [1/2, 2]
)


def correction_band(level: str, mode: str, gating: str, threshold: Sequence[float]) -> tuple[float, float]:
    """Check the options (ValueError naming the option) and return the band (low, high).

    ``threshold`` is ``[low, high]`` or ``[high]`` (an upper bound only: low = 0), as OpenRLHF's
    ``--algo.advantage.is_correction_threshold``. Refused: what OpenRLHF refuses (clip at seq
    level or with a divergence gate; a divergence gate with a lower bound) and a ratio band that
    excludes 1 (it would drop every token that the engine and the trainer agree on).
    """
    check_choice("level", level, CORRECTION_LEVELS)
    check_choice("mode", mode, CORRECTION_MODES)
    check_choice("gating", gating, CORRECTION_GATINGS)
    values = [float(v) for v in threshold]
    if len(values) not in (1, 2):
        raise ValueError(f"threshold={list(threshold)!r}: give [high] (an upper bound) or [low, high]")
    low, high = (0.0, values[0]) if len(values) == 1 else (values[0], values[1])
    check_range("threshold low", low, 0.0, None)
    if not high > low:
        raise ValueError(f"threshold={values!r}: high must be > low")
    if level == "off":
        return low, high
    if mode == "clip" and (level == "seq" or gating != "ratio"):
        raise ValueError(
            f"mode='clip' clamps each token's ratio: it needs level='token' and gating='ratio' (got level={level!r}, "
            f"gating={gating!r}); a sequence statistic or a divergence can only mask (mode='mask')"
        )
    if gating != "ratio" and low > 0:
        raise ValueError(
            f"gating={gating!r} bounds a divergence from above only: give threshold as [high] (got {values!r})"
        )
    if gating == "ratio" and not low <= 1.0 <= high:
        raise ValueError(
            f"threshold={values!r}: the ratio band [low, high] must contain 1 (tokens on which the engine and "
            "the trainer agree have ratio 1)"
        )
    return low, high


def _is_log_ratio(old_log_probs: torch.Tensor, rollout_log_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log(pi_old / pi_rollout) in fp32 (fp64 stays fp64), 0 on padding, clamped for exp."""
    dtype = torch.float64 if old_log_probs.dtype == torch.float64 else torch.float32
    if rollout_log_probs.shape != old_log_probs.shape or mask.shape != old_log_probs.shape:
        raise ValueError(
            f"old_log_probs {tuple(old_log_probs.shape)}, rollout_log_probs {tuple(rollout_log_probs.shape)} and "
            f"action_mask {tuple(mask.shape)} must have the same shape"
        )
    diff = old_log_probs.detach().to(dtype) - rollout_log_probs.detach().to(dtype)
    return torch.where(mask, diff, 0.0).clamp(-MAX_ABS_IS_LOG_RATIO, MAX_ABS_IS_LOG_RATIO)


@torch.no_grad()
def rollout_correction_weights(
    old_log_probs: torch.Tensor,
    rollout_log_probs: torch.Tensor,
    action_mask: torch.Tensor,
    level: str,
    mode: str = "mask",
    gating: str = "ratio",
    threshold: Sequence[float] = (0.5, 5.0),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token coefficients [N, T] (detached, 0 on padding; pass them as a loss's ``is_weights``)
    and the fraction of units the gate clipped or dropped (tokens, or sequences at level seq:
    OpenRLHF's ``is_filter_ratio``)."""
    low, high = correction_band(level, mode, gating, threshold)
    if level == "off":
        raise ValueError("level='off': there is no correction to compute")
    mask = action_mask.bool()
    log_w = _is_log_ratio(old_log_probs, rollout_log_probs, mask)
    token_w = torch.exp(log_w)
    lengths = mask.sum(dim=-1, keepdim=True)
    seq_level = level == "seq"
    if gating == "ratio":
        stat = (log_w.sum(dim=-1, keepdim=True) / lengths.clamp(min=1)).exp() if seq_level else token_w
    else:
        p = torch.exp(rollout_log_probs.detach().to(log_w.dtype)).clamp(1e-6, 1 - 1e-6)
        q = torch.exp(old_log_probs.detach().to(log_w.dtype)).clamp(1e-6, 1 - 1e-6)
        if gating == "binary_kl":
            stat = p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()
        else:
            stat = (p - q).abs()
        stat = torch.where(mask, stat, 0.0)
        if seq_level:
            stat = stat.sum(dim=-1, keepdim=True) / lengths.clamp(min=1)
    if mode == "clip":
        coef = stat.clamp(min=low, max=high)
        filtered = (stat < low) | (stat > high)
    else:
        keep = (stat >= low) & (stat <= high)
        coef = torch.where(keep, token_w, 0.0)
        filtered = ~keep
    coef = torch.where(mask, coef, 0.0)
    if seq_level:
        units, hit = lengths.squeeze(-1) > 0, filtered.squeeze(-1)
    else:
        units, hit = mask, filtered
    fraction = (hit & units).sum().to(log_w.dtype) / units.sum().clamp(min=1).to(log_w.dtype)
    return coef, fraction


@torch.no_grad()
def rollout_mismatch(old_log_probs: torch.Tensor, rollout_log_probs: torch.Tensor, action_mask: torch.Tensor) -> dict[str, float]:
    """Per-step mismatch on the sampled tokens (any shape; ``action_mask`` marks the valid ones):
    the keys of :data:`MISMATCH_METRICS`. With d = log pi_old - log pi_rollout and rho = e^d:
    ``vllm_kl`` mean(-d), ``mismatch/kl_k3`` mean(rho - 1 - d), mean and max |d|, and the fraction of
    tokens with rho outside [1/2, 2]. All 0 without valid tokens."""
    mask = action_mask.bool()
    d = _is_log_ratio(old_log_probs, rollout_log_probs, mask).to(torch.float64)[mask]
    if d.numel() == 0:
        return dict.fromkeys(MISMATCH_METRICS, 0.0)
    return {
        "vllm_kl": float((-d).mean()),
        "mismatch/kl_k3": float((torch.expm1(d) - d).mean()),
        "mismatch/log_ratio_abs_mean": float(d.abs().mean()),
        "mismatch/log_ratio_abs_max": float(d.abs().max()),
        "mismatch/ratio_outside_2x": float((d.abs() > math.log(MISMATCH_RATIO_BAND)).double().mean()),
    }
