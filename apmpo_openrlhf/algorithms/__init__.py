"""The algorithm core: pure PyTorch, no OpenRLHF/Ray/vLLM/DeepSpeed imports.

Every backend (the OpenRLHF adapter and the local trainer) calls these functions; there is
exactly one implementation of each formula of SPEC.md.
"""

from .adaptive import AdaptiveParameters, adaptive_parameters, rollout_reward_summary, validate_adaptive_options
from .advantages import group_advantages
from .kl import kl_penalty, kl_per_token
from .losses import (
    POLICY_LOSSES,
    PolicyLoss,
    apmpo_loss,
    clipped_log_ratio,
    dapo_loss,
    get_policy_loss,
    gmpo_loss,
    grpo_loss,
    log_power_mean,
)

__all__ = [
    "AdaptiveParameters",
    "POLICY_LOSSES",
    "PolicyLoss",
    "adaptive_parameters",
    "apmpo_loss",
    "clipped_log_ratio",
    "dapo_loss",
    "get_policy_loss",
    "gmpo_loss",
    "group_advantages",
    "grpo_loss",
    "kl_penalty",
    "kl_per_token",
    "log_power_mean",
    "rollout_reward_summary",
    "validate_adaptive_options",
]
