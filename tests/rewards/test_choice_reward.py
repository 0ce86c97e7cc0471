"""choice_reward (Geometry3K): letters, values, fallbacks; the real test split's gold choices."""

from __future__ import annotations

import pytest

from apmpo_openrlhf.data.sources import load_geometry3k
from apmpo_openrlhf.rewards import choice_reward, grade_label
from apmpo_openrlhf.rewards.choice_grading import extract_choice_answer, grade_choice

CHOICES = ["30", "60", "120", "240"]


@pytest.mark.parametrize(
    "response,expected",
    [
        ("so the answer is \\boxed{B}", 1.0),
        ("\\boxed{(B)}", 1.0),
        ("\\boxed{B. 60}", 1.0),
        ("\\boxed{\\text{B}}", 1.0),
        ("\\boxed{60}", 1.0),
        ("\\boxed{60.0}", 1.0),
        ("\\boxed{A}", 0.0),
        ("\\boxed{120}", 0.0),
        ("The answer is (B).", 1.0),
        ("Answer: C", 0.0),
        ("Reasoning...\nB", 1.0),
        ("I cannot tell.", 0.0),
        ("", 0.0),
    ],
)
def test_letter_and_value_answers(response, expected):
    assert choice_reward(response, "B", CHOICES) == expected


def test_latex_values_compare_by_math():
    choices = ["4 \\sqrt { 3 }", "8 \\sqrt { 3 }", "\\frac { 17 } { 12 }", "12"]
    assert choice_reward("\\boxed{8\\sqrt{3}}", "B", choices) == 1.0
    assert choice_reward("\\boxed{\\sqrt{192}}", "B", choices) == 1.0
    assert choice_reward("\\boxed{4\\sqrt{3}}", "B", choices) == 0.0
    assert choice_reward("\\boxed{\\frac{17}{12}}", "C", choices) == 1.0


def test_without_choices_only_letters_or_gold_values():
    assert choice_reward("\\boxed{B}", "B") == 1.0
    assert choice_reward("\\boxed{60}", "B") == 0.0  # the value cannot be checked without choices
    assert choice_reward("\\boxed{60}", "60") == 1.0  # gold given as a value


def test_bad_gold_is_an_error():
    with pytest.raises(ValueError, match="only 4 choices"):
        grade_choice("\\boxed{E}", "F", CHOICES)
    with pytest.raises(ValueError, match="empty"):
        grade_choice("\\boxed{B}", "", CHOICES)


def test_extraction():
    assert extract_choice_answer("blah \\boxed{D}") == "D"
    assert extract_choice_answer("The correct option is **C**") == "C"
    assert extract_choice_answer("nothing here") is None
    assert extract_choice_answer("The answer is a right triangle, so") is None
    assert extract_choice_answer("Final answer: (D)") == "D"


def test_geometry3k_test_split_gold_letters_and_values(data_dir):
    records = list(load_geometry3k("test", data_dir / "geometry3k"))
    assert len(records) == 601
    for rec in records:
        label = {"task": "choice", "answer": rec["answer"], "choices": rec["choices"]}
        assert grade_label(f"\\boxed{{{rec['answer']}}}", label)[0] == 1.0
        wrong = "ABCD"[("ABCD".index(rec["answer"]) + 1) % 4]
        assert grade_label(f"\\boxed{{{wrong}}}", label)[0] == 0.0
    # Values: numeric gold choices answered by value.
    numeric = [r for r in records if all(c.replace(".", "", 1).isdigit() for c in r["choices"])]
    assert len(numeric) > 400
    for rec in numeric:
        value = rec["choices"]["ABCD".index(rec["answer"])]
        assert choice_reward(f"\\boxed{{{value}}}", rec["answer"], rec["choices"]) == 1.0
