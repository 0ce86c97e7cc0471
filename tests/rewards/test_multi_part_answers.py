"""Answers in several \\boxed{} (one per part) against golds with several parts, with real math-verify,
through every grading path (reward_func, RewardSpec.grade of the local trainer, the evaluation
harness); the last-box rule everywhere else; linear-time extraction on hostile inputs."""

from __future__ import annotations

import json

import pytest

from apmpo_openrlhf.rewards import grade_label
from apmpo_openrlhf.rewards.extraction import answer_parts, boxes, last_boxed, outer_boxed
from apmpo_openrlhf.rewards.math_grading import grade_math, grade_math_batch, graded_answer
from apmpo_openrlhf.rewards.openrlhf_reward import reward_func
from apmpo_openrlhf.rewards.registry import get_reward_spec

SEVERAL = [
    ("1, 2, 3", 3), ("\\{1,2,3\\}", 3), ("{1,2,3}", 3), ("$\\{1\\pm\\sqrt{5},-2\\}$", 3), ("1,-2", 2),
    ("3, 5, 7", 3), ("2500,7500", 2), ("(1,8,19), (2,7,13), (4,5,7)", 3), ("f(n)=n, g(n)=1", 2),
    ("-12;-11;-10", 3), ("-2 \\text{ or } -12", 2), ("1 \\pm \\sqrt{19}", 2), ("\\boxed{69, 84}", 2),
    ("x=1 or x=2", 2), ("-2,-2,3", 2),
]
ONE = [
    "5", "(1,2)", "[0,1)", "(3,4]", "\\left( 3, \\frac{\\pi}{2} \\right)", "(6,31,-1)", "10,\\!080", "58,500",
    "1,000", "\\$32,\\!348", "11,\\! 111,\\! 111,\\! 100", "(0,9) \\cup (9,36)", "x \\in [-2,7]",
    "\\{1\\} \\cup \\{2,3\\}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\text{3 and 4 apples}", "-2,-2",
    "\\frac{1}{2}",
]


@pytest.mark.parametrize("gold,n", SEVERAL)
def test_golds_with_several_parts(gold, n):
    assert len(answer_parts(gold)) == n, answer_parts(gold)


@pytest.mark.parametrize("gold", ONE)
def test_points_intervals_and_thousands_are_one_answer(gold):
    assert len(answer_parts(gold)) == 1, answer_parts(gold)


CORRECT = [
    # (response, gold)
    ("The roots are $\\boxed{1}$, $\\boxed{2}$ and $\\boxed{3}$.", "1, 2, 3"),
    ("The roots are $\\boxed{1}$, $\\boxed{2}$ and $\\boxed{3}$.", "\\{1,2,3\\}"),
    ("\\boxed{1}\n\\boxed{2}\n\\boxed{3}", "{1,2,3}"),
    ("Case one: $x=\\boxed{3}$. Checking the other case ... it also works, so $x = \\boxed{1}$, and "
     "finally the last root is $x=\\boxed{2}$.", "1, 2, 3"),  # spread out, in another order
    ("\\boxed{1}, \\boxed{2}, \\boxed{2}, \\boxed{3}", "1, 2, 3"),  # a part boxed twice
    ("\\boxed{69} and \\boxed{84}", ["$69$", "$84$"]),  # OlympiadBench's list gold
    ("$\\boxed{(1,8,19)}$, $\\boxed{(2,7,13)}$, $\\boxed{(4,5,7)}$", "(1,8,19), (2,7,13), (4,5,7)"),
    ("$x=\\boxed{1+\\sqrt{19}}$ or $x=\\boxed{1-\\sqrt{19}}$", "1 \\pm \\sqrt{19}"),
    ("\\boxed{x=1} and \\boxed{x=-2}", "1,-2"),
    ("\\boxed{\\frac{1}{2}}, \\boxed{0.25}", "\\frac14, 0.5"),
    # one box holding every part: unchanged
    ("\\boxed{3, 2, 1}", "1, 2, 3"),
    ("first \\boxed{1}, then all of them: \\boxed{\\{1, 2, 3\\}}", "1, 2, 3"),
]
WRONG = [
    ("\\boxed{1}, \\boxed{2}, \\boxed{4}", "1, 2, 3"),  # a wrong part
    ("\\boxed{1}, \\boxed{2}", "1, 2, 3"),  # a part missing
    ("\\boxed{1}, \\boxed{2}, \\boxed{3}, \\boxed{4}", "1, 2, 3"),  # a part too many
    ("\\boxed{1}, \\boxed{1}", "1, 2"),  # the same part twice is one part
    ("\\boxed{3} ... so the answer is \\boxed{1, 2}", "1, 2, 3"),  # a several-part last box is the final word
    ("\\boxed{1}, \\boxed{2}", "(1,2)"),  # a point is one answer: the last box, 2, is graded
    ("\\boxed{10}, \\boxed{080}", "10,\\!080"),  # a number with a thousands separator is one answer
    ("$x=\\boxed{1+\\sqrt{19}}$", "1 \\pm \\sqrt{19}"),
]
LAST_BOX_RULE = [
    # gold with one part: the last box is graded whatever came before
    ("First \\boxed{3}, then corrected: \\boxed{4}", "4", 1.0),
    ("First \\boxed{4}, then corrected: \\boxed{3}", "4", 0.0),
    ("\\boxed{2}, \\boxed{1}", "2", 0.0),
    ("\\boxed{(1, 2)}", "(1,2)", 1.0),
    ("\\boxed{1} \\boxed{\\boxed{2}}", "2", 1.0),
]


@pytest.mark.parametrize("response,gold", CORRECT)
def test_parts_in_several_boxes_score_one(response, gold):
    assert grade_math(response, gold) == (1.0, "correct"), graded_answer(response, gold)


@pytest.mark.parametrize("response,gold", WRONG)
def test_wrong_or_incomplete_parts_score_zero(response, gold):
    assert grade_math(response, gold) == (0.0, "wrong"), graded_answer(response, gold)


@pytest.mark.parametrize("response,gold,score", LAST_BOX_RULE)
def test_single_part_golds_keep_the_last_box_rule(response, gold, score):
    assert grade_math(response, gold).score == score


def test_the_graded_answer_is_the_joined_boxes_only_for_several_part_golds():
    response = "so $\\boxed{2}$ and $\\boxed{ 1 }$ and again $\\boxed{2}$."
    assert graded_answer(response, "1, 2") == "2, 1"  # distinct parts, in order of appearance
    assert graded_answer(response, "2") == "2"
    assert graded_answer("no box here: 1, 2", "1, 2") is None
    assert graded_answer("\\boxed{**7**.}", "7") == "7"  # the same clean-up as before


def test_every_grading_path_uses_the_rule():
    response, gold = "\\boxed{-2} and \\boxed{5}", "5, -2"
    label = {"task": "math", "answer": gold}
    # OpenRLHF: reward_func inside the vLLM engines
    out = reward_func([response], [""], [json.dumps(label)])
    assert out["rewards"] == 1.0 and out["extra_logs"]["reward_timeout"] == 0.0
    # the local trainer: RewardSpec.grade with reward.timeout_s bound
    assert get_reward_spec("math").with_timeout(10.0).grade(response, label) == (1.0, "correct")
    assert grade_label(response, label) == (1.0, "correct")
    # the evaluation harness: grade_problems (batch grading and the recorded answer)
    from evaluation.grading import grade_problems
    from evaluation.problems import Problem

    problem = Problem("p1", "Q", label, gold)
    graded = grade_problems([problem, problem], [response, "\\boxed{5}"])
    assert [(g.correct, g.extracted) for g in graded] == [(True, "-2, 5"), (False, "5")]
    assert grade_math_batch([(response, gold)])[0] == (1.0, "correct")


def test_box_extraction_matches_the_brace_structure():
    text = "a \\boxed{\\frac{1}{2}} b \\fbox{x^{2}} c \\boxed 7 d \\boxed{\\{1,2\\}} e \\boxed{unterminated"
    assert [b.content for b in boxes(text)] == ["\\frac{1}{2}", "x^{2}", "7", "\\{1,2\\}"]
    assert last_boxed(text) == "\\{1,2\\}"
    assert outer_boxed("\\boxed{x \\boxed{1}} \\boxed{2}") == ["1", "2"]
    assert last_boxed("\\boxed {3}") == "3" and last_boxed("\\boxedfoo{3}") is None


@pytest.mark.timeout(120)  # the former extraction rescanned the text per box: minutes on these inputs
def test_hostile_inputs_stay_time_bounded():
    hostile = [
        "\\boxed{" * 40_000,  # 280k characters of unterminated boxes
        "\\boxed{1}" * 30_000,  # many boxes against a several-part gold: too long to join
        ("\\boxed{" + "{" * 5_000) * 20,
        "\\boxed{1}, " * 5_000 + "\\boxed{" + "9^{" * 300 + "}" * 300 + "}",
        " \\boxed{1}\\{" * 20_000,
    ]
    grades = grade_math_batch([(h, "1, 2") for h in hostile] + [(h, "1") for h in hostile], timeout=5.0)
    for grade in grades:
        assert grade.score == 0.0 or grade.reason == "correct", grade
        assert grade.reason in {"wrong", "timeout", "unparsable", "no_answer", "correct"}, grade
    # the many-box answer against a one-part gold is graded by its last box, 1
    assert grades[len(hostile) + 1] == (1.0, "correct")
