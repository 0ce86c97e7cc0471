"""OpenRLHF's per-step status and evaluation logs as rows with the local backend's metric names.

The trainer actor writes these rows to ``<output_dir>/metrics.jsonl`` / ``eval.jsonl`` and hands the
same names to OpenRLHF's TensorBoard and W&B loggers, so that ``compare``, the plots and a user's
scripts read either backend the same way (docs/openrlhf.md, "Metrics").
"""

from __future__ import annotations

import math
import numbers

# OpenRLHF status key -> the local backend's name for the same quantity.
RENAMED = {
    "policy_loss": "loss",  # token-weighted mean over the step's micro-batches of the policy term
    "entropy_loss": "entropy",  # token entropy (logged, not optimised: --actor.entropy_coef 0)
    "actor_lr": "lr",  # after the last optimizer step of the rollout
    "actor_grad_norm": "grad_norm",  # of the last optimizer step of the rollout
}
# Local names of values OpenRLHF (or the extension) logs under another name that stays too.
ALIASES = {
    "rollout/raw_reward_mean": "reward_mean",  # raw rewards of every group sampled for the step
    "rollout/raw_reward_std": "reward_std",
    "timing/step_total": "step_time_s",
}


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "numel") and value.numel() == 1:  # a 0-d tensor
        return float(value)
    return None


def train_row(step: int, status: dict, elapsed_before: float, extra: dict | None = None) -> dict:
    """One metrics.jsonl row: every numeric status entry, renamed per :data:`RENAMED`, the
    :data:`ALIASES`, ``extra`` (added after OpenRLHF summed the step's ``timing/*``) and
    ``elapsed_s`` (training time summed over the steps, resumed segments included)."""
    row: dict = {"step": step}
    for key, value in {**status, **(extra or {})}.items():
        number = _number(value)
        if number is None or math.isnan(number):
            continue
        row[RENAMED.get(key, key)] = number
        if key in ALIASES:
            row[ALIASES[key]] = number
    row["elapsed_s"] = elapsed_before + row.get("step_time_s", 0.0)
    return row


def eval_row(step: int, logs: dict, samples: list) -> dict:
    """One eval.jsonl row: the local backend's ``eval_reward_mean`` (mean reward of every evaluation
    sample), ``eval_samples``, ``eval_response_length``, and OpenRLHF's ``eval_*`` metrics."""
    rewards = [float(r) for s in samples if s.rewards is not None for r in s.rewards.reshape(-1)]
    lengths = [float(n) for s in samples if s.response_length is not None for n in s.response_length.reshape(-1)]
    row: dict = {"step": step}
    if rewards:
        row["eval_reward_mean"] = sum(rewards) / len(rewards)
    row["eval_samples"] = len(rewards)
    if lengths:
        row["eval_response_length"] = sum(lengths) / len(lengths)
    for key, value in logs.items():
        number = _number(value)
        if number is not None and key not in row:
            row[key] = number
    return row
