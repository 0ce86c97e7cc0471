"""Synthetic arithmetic with a short, exactly checkable answer ("3+4=" -> "7", "23+41=" -> "64").

A randomly initialised model answers correctly with a small but nonzero probability (it must emit
the right digits as its first number), so a verifiable reward starts low and RL can raise it. Each
prompt record has the same shape as a line of a real prompt dataset: ``{"prompt": ..., "label":
{"task": "arithmetic", "answer": ...}}``.

The harder family of the testbed (docs/local.md, "A testbed where the methods differ") uses the
same generator with more digits (``max_operand``) and/or more operands (``num_operands``), a
seeded split (:func:`split_problems`) into problems never trained on (``heldout``), a warm-start
subset of the training problems (``warmstart``, for the supervised warm start of
apmpo_openrlhf/local/warmstart.py) and the training problems (``train``, everything not held out).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence


def _evaluate(operands: Sequence[int], ops: Sequence[str]) -> int:
    value = operands[0]
    for op, x in zip(ops, operands[1:]):
        value = value + x if op == "+" else value - x
    return value


def arithmetic_problems(
    min_operand: int = 0,
    max_operand: int = 9,
    operations: Sequence[str] = ("+",),
    max_answer: int = 9,
    num_operands: int = 2,
) -> list[tuple[str, str]]:
    """Every (question, answer) pair with ``num_operands`` operands in [min_operand, max_operand],
    operators from ``operations`` (evaluated left to right; all combinations of operators when
    there are more than two operands) and an answer in [0, max_answer]."""
    for op in operations:
        if op not in ("+", "-"):
            raise ValueError(f"operations: {op!r} is not allowed; choose '+' or '-'")
    if num_operands < 2:
        raise ValueError(f"num_operands={num_operands}: must be >= 2")
    problems = []
    ops_seen = list(dict.fromkeys(operations))
    values = range(min_operand, max_operand + 1)
    for ops in itertools.product(ops_seen, repeat=num_operands - 1):
        for operands in itertools.product(values, repeat=num_operands):
            value = _evaluate(operands, ops)
            if 0 <= value <= max_answer:
                text = str(operands[0]) + "".join(f"{op}{x}" for op, x in zip(ops, operands[1:]))
                problems.append((f"{text}=", str(value)))
    if not problems:
        raise ValueError(
            f"no arithmetic problem has {num_operands} operands in [{min_operand}, {max_operand}], operations "
            f"{list(operations)} and an answer in [0, {max_answer}]: widen local.task"
        )
    return problems


def split_problems(
    problems: Sequence[tuple[str, str]], heldout_fraction: float = 0.0, warmstart_fraction: float = 0.0,
    split_seed: int = 0,
) -> dict[str, list[tuple[str, str]]]:
    """Seeded, disjoint split: ``heldout`` (round(heldout_fraction * N) problems, never trained
    on), ``train`` (the rest) and ``warmstart`` (round(warmstart_fraction * N) problems drawn from
    ``train``). The split depends only on the problem list and ``split_seed``, not on the run's seed,
    so every method and seed of a comparison is evaluated on the same held-out problems."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction={heldout_fraction}: must lie in [0, 1)")
    n = len(problems)
    order = list(range(n))
    random.Random(split_seed).shuffle(order)
    n_held = round(heldout_fraction * n)
    if heldout_fraction > 0 and n_held == 0:
        n_held = 1
    if n_held >= n:
        raise ValueError(f"heldout_fraction={heldout_fraction} leaves no training problem out of {n}")
    n_warm = min(round(warmstart_fraction * n), n - n_held)
    if warmstart_fraction > 0 and n_warm == 0:
        n_warm = 1
    held = sorted(order[:n_held])
    train = sorted(order[n_held:])
    warm = sorted(order[n_held : n_held + n_warm])
    return {
        "train": [problems[i] for i in train],
        "heldout": [problems[i] for i in held],
        "warmstart": [problems[i] for i in warm],
    }


def as_records(problems: Sequence[tuple[str, str]], label_task: str = "arithmetic") -> list[dict]:
    return [{"prompt": q, "label": {"task": label_task, "answer": a}} for q, a in problems]


class ArithmeticTask:
    """Draws prompts uniformly (with replacement) from :func:`arithmetic_problems` (or the given
    ``problems``, e.g. the ``train`` split), seeded.

    The generator state is part of the trainer checkpoint, so a resumed run draws the same prompts.
    """

    def __init__(
        self, seed: int, problems: Sequence[tuple[str, str]] | None = None, label_task: str = "arithmetic",
        **options,
    ) -> None:
        self.problems = list(problems) if problems is not None else arithmetic_problems(**options)
        self.label_task = label_task
        self._rng = random.Random(seed)

    def sample(self, n: int) -> list[dict]:
        picks = [self._rng.choice(self.problems) for _ in range(n)]
        return as_records(picks, self.label_task)

    def state_dict(self) -> dict:
        return {"rng": self._rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
