"""The synthetic task and its reward, registered like the real ones."""

from __future__ import annotations

import pytest

from apmpo_openrlhf.rewards.registry import get_reward, grade_label
from apmpo_openrlhf.tasks import ArithmeticTask, arithmetic_problems


def test_problems_cover_exactly_the_allowed_answers():
    problems = arithmetic_problems(0, 9, ["+", "-"], 9)
    for q, a in problems:
        x, op, y = q[0], q[1], q[2]
        value = int(x) + int(y) if op == "+" else int(x) - int(y)
        assert q.endswith("=") and str(value) == a and 0 <= value <= 9
    assert len([1 for q, _ in problems if "+" in q]) == 55  # a + b <= 9 with a, b in 0..9
    assert len([1 for q, _ in problems if "-" in q]) == 55  # a - b >= 0


def test_empty_problem_set_is_an_error():
    with pytest.raises(ValueError, match="no arithmetic problem"):
        arithmetic_problems(5, 9, ["+"], 3)


def test_task_sampling_is_seeded_and_resumable():
    a, b = ArithmeticTask(3), ArithmeticTask(3)
    assert a.sample(20) == b.sample(20)
    state = a.state_dict()
    first = a.sample(10)
    c = ArithmeticTask(99)
    c.load_state_dict(state)
    assert c.sample(10) == first
    rec = first[0]
    assert rec["label"]["task"] == "arithmetic" and rec["prompt"].endswith("=")


@pytest.mark.parametrize(
    "response, gold, expected",
    [
        ("7", "7", 1.0),
        (" 7\n", "7", 1.0),
        ("7x", "7", 1.0),
        ("a7", "7", 1.0),
        ("77", "7", 0.0),
        ("8", "7", 0.0),
        ("", "7", 0.0),
        ("-3", "-3", 1.0),
        ("no digits at all", "0", 0.0),
        ("9" * 10_000, "9", 0.0),
    ],
)
def test_arithmetic_reward(response, gold, expected):
    fn = get_reward("arithmetic")
    assert fn(response, gold) == expected
    assert grade_label(response, {"task": "arithmetic", "answer": gold})[0] == expected
