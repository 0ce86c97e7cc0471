"""Reward registry: registration, lazy lookup by task name, label dispatch and its errors."""

from __future__ import annotations

import pytest

from apmpo_openrlhf.rewards import registry
from apmpo_openrlhf.rewards.registry import get_reward, grade_label, parse_label, register_reward


def test_register_and_dispatch_with_default_answer_field():
    @register_reward("test_prefix")
    def prefix_reward(response: str, gold: str) -> float:
        return 1.0 if response.startswith(gold) else 0.0

    assert get_reward("test_prefix") is prefix_reward
    assert grade_label("abc", {"task": "test_prefix", "answer": "ab"}) == (1.0, "correct")
    assert grade_label("abc", '{"task": "test_prefix", "answer": "x"}') == (0.0, "wrong")
    # Registering the same function again (a module reloaded by path) is allowed...
    register_reward("test_prefix")(prefix_reward)

    # ...another function under the same name is not.
    def other(response: str, gold: str) -> float:
        return 0.0

    with pytest.raises(ValueError, match="already registered"):
        register_reward("test_prefix")(other)


def test_label_to_args_tuple_or_dict_and_detailed():
    def kw_reward(response: str, *, lo: int, hi: int) -> float:
        return 1.0 if lo <= len(response) <= hi else 0.0

    register_reward("test_length", label_to_args=lambda lab: {"lo": lab["lo"], "hi": lab["hi"]},
                    detailed=lambda r, *, lo, hi: (kw_reward(r, lo=lo, hi=hi), f"len={len(r)}"))(kw_reward)
    assert grade_label("abcd", {"task": "test_length", "lo": 2, "hi": 5}) == (1.0, "len=4")

    register_reward("test_bad_range")(lambda response, gold: 2.0)
    with pytest.raises(ValueError, match="outside"):
        grade_label("x", {"task": "test_bad_range", "answer": "y"})


def test_lazy_import_by_task_name():
    assert "sql" in registry.available_rewards() and "arithmetic" in registry.available_rewards()
    assert get_reward("choice").__name__ == "choice_reward"  # imports choice_grading on demand
    with pytest.raises(KeyError, match="unknown reward task 'no_such_task'"):
        get_reward("no_such_task")
    with pytest.raises(KeyError, match="invalid reward task name"):
        get_reward("../os")


@pytest.mark.parametrize(
    "label,match",
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ({"answer": "1"}, "string 'task' field"),
        ({"task": 3, "answer": "1"}, "string 'task' field"),
    ],
)
def test_malformed_labels(label, match):
    with pytest.raises(ValueError, match=match):
        parse_label(label)


def test_invalid_registration_name():
    with pytest.raises(ValueError, match="reward name must match"):
        register_reward("Bad Name")
