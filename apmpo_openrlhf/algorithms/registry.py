"""The loss registry: one :class:`PolicyLoss` entry per loss, holding everything a backend needs.

A backend (the local trainer, the OpenRLHF actor and experience maker) reads only the entry:

- ``parameters(config)``: the loss's hyper-parameters from the training config (``config.algorithm``,
  and ``config.rollout`` where a loss needs it), as keyword arguments of ``fn``;
- ``reads``: the keys of the ``algorithm`` section those parameters come from; the config schema
  refuses every other loss-specific key that a user set (``hints`` say what to use instead);
- ``aggregation``: how the loss (and the KL term added to it) is normalised: ``"sequence"`` (token
  mean per sequence, divided by the global sequence count), ``"token"`` (token sum divided by the
  global token count) or ``"budget"`` (token sum divided by sequences x a constant token budget);
- ``advantage_std``: whether advantages are divided by the group std (SPEC.md 2) or only centred;
- ``reported(parameters)``: the (p, eps_high) a fixed-parameter loss logs; ``adaptive`` losses take
  APMPO's per-sample p and eps_high instead.

This module reads the config through attributes only (a pydantic model or any object with the
same attributes): it imports nothing from the config package, which imports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ._validation import check_choice
from .adaptive import AdaptiveParameters
from .advantages import group_advantages
from .kl import kl_penalty
from .losses import Metrics, apmpo_loss, cispo_loss, dapo_loss, drgrpo_loss, gmpo_loss, grpo_loss, gspo_loss

AGGREGATIONS = ("sequence", "token", "budget")


@dataclass(frozen=True)
class PolicyLoss:
    """A registry entry (see the module docstring)."""

    name: str
    fn: Callable[..., tuple[torch.Tensor, Metrics]]
    aggregation: str
    parameters: Callable[[Any], dict]
    reported: Callable[[dict], tuple[float, float]]
    reads: tuple[str, ...] = ()
    adaptive: bool = False
    advantage_std: bool = True
    hints: Mapping[str, str] = field(default_factory=dict)
    title: str = ""

    def __post_init__(self) -> None:
        check_choice("aggregation", self.aggregation, AGGREGATIONS)

    def __call__(self, *args, **kwargs) -> tuple[torch.Tensor, Metrics]:
        return self.fn(*args, **kwargs)

    @property
    def divisor(self) -> str:
        """The keyword of ``fn`` that takes the global count of one optimizer step."""
        return "num_tokens" if self.aggregation == "token" else "num_sequences"

    def step_count(self, num_sequences: int | float, num_tokens: int | float) -> int | float:
        """The value of :attr:`divisor` for an optimizer step of ``num_sequences`` sequences holding
        ``num_tokens`` valid tokens (all micro-batches and data-parallel ranks)."""
        return num_tokens if self.aggregation == "token" else num_sequences

    def token_normaliser(self, params: Mapping[str, Any]) -> float | None:
        """The constant token budget of a ``"budget"`` loss (None otherwise)."""
        return float(params["token_budget"]) if self.aggregation == "budget" else None

    def advantages(self, rewards: torch.Tensor, group_size: int, std: str = "population",
                   delta: float = 1e-6) -> torch.Tensor:
        """Per-sample advantages of this loss from (shaped) rewards in prompt-group order."""
        return group_advantages(rewards, group_size, std=std, delta=delta, scale=self.advantage_std)

    def kl_penalty(self, log_probs, ref_log_probs, action_mask, estimator: str, params: Mapping[str, Any],
                   count: int | float | torch.Tensor) -> torch.Tensor:
        """The KL term of one micro-batch, aggregated like the policy term over the ``count``
        (:meth:`step_count`) of its optimizer step. Multiply by beta outside."""
        return kl_penalty(log_probs, ref_log_probs, action_mask, estimator, self.aggregation,
                          **{self.divisor: count}, token_budget=self.token_normaliser(params))

    def used_parameters(self, params: Mapping[str, Any], stats: AdaptiveParameters) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (p, eps_high) the loss trains with: APMPO's adaptive values, else its constants."""
        if self.adaptive:
            return stats.p, stats.eps_high
        p, eps_high = self.reported(params)
        return torch.full_like(stats.p, p), torch.full_like(stats.eps_high, eps_high)


def _eps(alg, name: str, default: float) -> float:
    value = getattr(alg, name)
    return default if value is None else float(value)


def _clip_pair(default_high: float) -> Callable[[Any], dict]:
    def parameters(config) -> dict:
        a = config.algorithm
        return {"eps_low": float(a.eps_low), "eps_high": _eps(a, "eps_high", default_high)}

    return parameters


def _drgrpo_parameters(config) -> dict:
    a = config.algorithm
    budget = a.drgrpo_token_budget if a.drgrpo_token_budget is not None else config.rollout.max_new_tokens
    return {"eps_low": float(a.eps_low), "eps_high": _eps(a, "eps_high", 0.2), "token_budget": int(budget)}


_APMPO_EPS_HINT = (
    "APMPO's upper bound is adaptive (FAC); for a fixed one set algorithm.adaptive.eps_schedule: fixed and "
    "algorithm.adaptive.eps_fixed: <value>"
)
_SHARED_ADVANTAGE = ("advantage_std", "advantage_delta")

POLICY_LOSSES: dict[str, PolicyLoss] = {
    "grpo": PolicyLoss(
        "grpo", grpo_loss, "sequence", _clip_pair(0.2), reported=lambda k: (1.0, k["eps_high"]),
        reads=("eps_low", "eps_high", *_SHARED_ADVANTAGE), title="GRPO (per-sequence token mean, clip 0.2)",
    ),
    "dapo": PolicyLoss(
        "dapo", dapo_loss, "token", _clip_pair(0.28), reported=lambda k: (1.0, k["eps_high"]),
        reads=("eps_low", "eps_high", *_SHARED_ADVANTAGE), title="DAPO (token-level mean, clip-higher 0.2 / 0.28)",
    ),
    "gmpo": PolicyLoss(
        "gmpo", gmpo_loss, "sequence", lambda c: {"clip": float(c.algorithm.gmpo_clip)},
        reported=lambda k: (0.0, math.expm1(k["clip"])), reads=("gmpo_clip", *_SHARED_ADVANTAGE),
        title="GMPO (geometric mean, log-space clip 0.4)",
    ),
    "apmpo": PolicyLoss(
        "apmpo", apmpo_loss, "sequence",
        lambda c: {"eps_low": float(c.algorithm.eps_low), "clip": c.algorithm.clip},
        reported=lambda k: (math.nan, math.nan), reads=("eps_low", "clip", "adaptive", *_SHARED_ADVANTAGE),
        adaptive=True, hints={"eps_high": _APMPO_EPS_HINT}, title="APMPO (adaptive power mean p, adaptive clip)",
    ),
    "gspo": PolicyLoss(
        "gspo", gspo_loss, "sequence",
        lambda c: {"eps_low": float(c.algorithm.gspo_eps_low), "eps_high": float(c.algorithm.gspo_eps_high)},
        reported=lambda k: (0.0, k["eps_high"]), reads=("gspo_eps_low", "gspo_eps_high", *_SHARED_ADVANTAGE),
        hints={"eps_low": "GSPO clips the sequence ratio: use algorithm.gspo_eps_low",
               "eps_high": "GSPO clips the sequence ratio: use algorithm.gspo_eps_high"},
        title="GSPO (sequence-level ratio and clip, 3e-4 / 4e-4)",
    ),
    "drgrpo": PolicyLoss(
        "drgrpo", drgrpo_loss, "budget", _drgrpo_parameters, reported=lambda k: (1.0, k["eps_high"]),
        reads=("eps_low", "eps_high", "drgrpo_token_budget"), advantage_std=False,
        hints={"advantage_std": "Dr. GRPO does not divide advantages by the group std",
               "advantage_delta": "Dr. GRPO does not divide advantages by the group std"},
        title="Dr. GRPO (centred advantages, constant token normaliser)",
    ),
    "cispo": PolicyLoss(
        "cispo", cispo_loss, "token",
        lambda c: {"eps_high": float(c.algorithm.cispo_eps_high),
                   "eps_low": None if c.algorithm.cispo_eps_low is None else float(c.algorithm.cispo_eps_low)},
        reported=lambda k: (1.0, k["eps_high"]), reads=("cispo_eps_low", "cispo_eps_high", *_SHARED_ADVANTAGE),
        hints={"eps_high": "CISPO clips its importance weight: use algorithm.cispo_eps_high",
               "eps_low": "CISPO clips its importance weight: use algorithm.cispo_eps_low"},
        title="CISPO (clipped, detached IS weight on a REINFORCE token loss)",
    ),
}

# Keys of the `algorithm` section that belong to some loss: a loss that does not read one refuses it
# when set to anything but the schema default (config/schema.py).
LOSS_SPECIFIC_KEYS: tuple[str, ...] = tuple(dict.fromkeys(k for e in POLICY_LOSSES.values() for k in e.reads))


def get_policy_loss(name: str) -> PolicyLoss:
    """Look a loss up by name (a key of :data:`POLICY_LOSSES`)."""
    check_choice("loss", name, POLICY_LOSSES)
    return POLICY_LOSSES[name]


def readers_of(key: str) -> list[str]:
    """The losses whose parameters come from ``algorithm.<key>``."""
    return [name for name, entry in POLICY_LOSSES.items() if key in entry.reads]
