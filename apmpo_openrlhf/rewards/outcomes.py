"""How each response was graded, counted under the same metric names on both backends.

A grader's reason (``correct``, ``wrong``, ``timeout``, ``no_answer``, ``error: ...``, ...) maps to
the per-sample flags that ``openrlhf_reward.reward_func`` returns in ``extra_logs`` (summed per step
by ``openrlhf_adapter/loop_checks.py``) and that the local trainer counts itself: ``reward/graded``,
``reward/timeouts`` (the grader hit its time limit: scored 0, but not a wrong answer),
``reward/errors`` (the grader failed) and ``reward/no_answer`` (the response gave no answer).
"""

from __future__ import annotations

from typing import Mapping

# extra_logs key of one graded response -> metric name of the step's count
OUTCOME_KEYS = {"reward_timeout": "reward/timeouts", "reward_error": "reward/errors",
                "reward_no_answer": "reward/no_answer"}
GRADED_KEY = "reward/graded"


def outcome_flags(reason: str) -> dict[str, float]:
    """The extra_logs flags (each 0.0 or 1.0) of one response graded with ``reason``."""
    flags = dict.fromkeys(OUTCOME_KEYS, 0.0)
    if reason == "timeout":
        flags["reward_timeout"] = 1.0
    elif reason == "no_answer":
        flags["reward_no_answer"] = 1.0
    elif reason.startswith("error"):
        flags["reward_error"] = 1.0
    return flags


class OutcomeCounter:
    """Counts of graded responses by outcome, under the metric names; ``take()`` returns and resets."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.counts = {GRADED_KEY: 0, **{metric: 0 for metric in OUTCOME_KEYS.values()}}

    def add(self, flags: Mapping[str, float]) -> None:
        self.counts[GRADED_KEY] += 1
        for key, metric in OUTCOME_KEYS.items():
            self.counts[metric] += int(flags.get(key, 0.0))

    def add_reason(self, reason: str) -> None:
        self.add(outcome_flags(reason))

    def take(self) -> dict[str, int]:
        counts = dict(self.counts)
        self.reset()
        return counts
