"""The algorithm core: pure PyTorch, no OpenRLHF/Ray/vLLM/DeepSpeed imports.

Every backend (the OpenRLHF adapter and the local trainer) calls these functions; there is
exactly one implementation of each formula of SPEC.md and of the baselines of docs/algorithms.md.
A loss is one entry of :data:`POLICY_LOSSES` (registry.py).
"""

from .adaptive import AdaptiveParameters, adaptive_parameters, rollout_reward_summary, validate_adaptive_options
from .advantages import group_advantages
from .kl import kl_penalty, kl_per_token
from .losses import (
    apmpo_loss,
    cispo_loss,
    clipped_log_ratio,
    dapo_loss,
    drgrpo_loss,
    gmpo_loss,
    grpo_loss,
    gspo_loss,
    log_power_mean,
)
from .registry import LOSS_SPECIFIC_KEYS, POLICY_LOSSES, PolicyLoss, get_policy_loss, readers_of
from .rollout_correction import (
    CORRECTION_GATINGS,
    CORRECTION_LEVELS,
    CORRECTION_MODES,
    MISMATCH_METRICS,
    correction_band,
    rollout_correction_weights,
    rollout_mismatch,
)

__all__ = [
    "AdaptiveParameters",
    "CORRECTION_GATINGS",
    "CORRECTION_LEVELS",
    "CORRECTION_MODES",
    "LOSS_SPECIFIC_KEYS",
    "MISMATCH_METRICS",
    "POLICY_LOSSES",
    "PolicyLoss",
    "adaptive_parameters",
    "apmpo_loss",
    "cispo_loss",
    "clipped_log_ratio",
    "correction_band",
    "dapo_loss",
    "drgrpo_loss",
    "get_policy_loss",
    "gmpo_loss",
    "group_advantages",
    "grpo_loss",
    "gspo_loss",
    "kl_penalty",
    "kl_per_token",
    "log_power_mean",
    "readers_of",
    "rollout_correction_weights",
    "rollout_mismatch",
    "rollout_reward_summary",
    "validate_adaptive_options",
]
