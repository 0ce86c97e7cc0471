"""Single-step arithmetic with a short, exactly checkable answer ("3+4=" -> "7").

A randomly initialised model answers correctly with a small but nonzero probability (it must emit
the right digit as its first number), so a verifiable reward starts low and RL can raise it. Each
prompt record has the same shape as a line of a real prompt dataset: ``{"prompt": ..., "label":
{"task": "arithmetic", "answer": ...}}``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def arithmetic_problems(
    min_operand: int = 0, max_operand: int = 9, operations: Sequence[str] = ("+",), max_answer: int = 9
) -> list[tuple[str, str]]:
    """Every (question, answer) pair with operands in [min_operand, max_operand] and answer in [0, max_answer]."""
    problems = []
    for op in operations:
        if op not in ("+", "-"):
            raise ValueError(f"operations: {op!r} is not allowed; choose '+' or '-'")
        for a in range(min_operand, max_operand + 1):
            for b in range(min_operand, max_operand + 1):
                value = a + b if op == "+" else a - b
                if 0 <= value <= max_answer:
                    problems.append((f"{a}{op}{b}=", str(value)))
    if not problems:
        raise ValueError(
            f"no arithmetic problem has operands in [{min_operand}, {max_operand}], operations {list(operations)} "
            f"and an answer in [0, {max_answer}]: widen local.task"
        )
    return problems


class ArithmeticTask:
    """Draws prompts uniformly (with replacement) from :func:`arithmetic_problems`, seeded.

    The generator state is part of the trainer checkpoint, so a resumed run draws the same prompts.
    """

    def __init__(self, seed: int, **options) -> None:
        self.problems = arithmetic_problems(**options)
        self._rng = random.Random(seed)

    def sample(self, n: int) -> list[dict]:
        picks = [self._rng.choice(self.problems) for _ in range(n)]
        return [{"prompt": q, "label": {"task": "arithmetic", "answer": a}} for q, a in picks]

    def state_dict(self) -> dict:
        return {"rng": self._rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
