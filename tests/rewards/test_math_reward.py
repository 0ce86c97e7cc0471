"""math_reward: reference solutions graded against their own and other problems' answers,
curated equivalence pairs, fallbacks, and pathological answers (bounded time, score 0)."""

from __future__ import annotations

import pytest

from apmpo_openrlhf.data.sources import load_math
from apmpo_openrlhf.rewards import grade_label, math_reward
from apmpo_openrlhf.rewards.extraction import last_boxed
from apmpo_openrlhf.rewards.math_grading import gold_to_latex, grade_math, grade_math_batch


@pytest.fixture(scope="module")
def reference_sets(data_dir):
    sets = {name: list(load_math(name, data_dir)) for name in ("math500", "aime24")}
    assert len(sets["math500"]) == 500 and len(sets["aime24"]) == 30
    return sets


def test_reference_solutions_score_their_own_answer(reference_sets):
    for name, recs in reference_sets.items():
        grades = grade_math_batch([(r["metadata"]["solution"], r["answer"]) for r in recs])
        failures = [(r["id"], g.reason) for r, g in zip(recs, grades) if g.score != 1.0]
        assert len(failures) <= 0.01 * len(recs), f"{name}: {failures}"


def test_reference_solutions_fail_against_other_answers(reference_sets):
    for name, recs in reference_sets.items():
        n = len(recs)
        others = [recs[(i + 1) % n]["answer"] for i in range(n)]
        # Neighbouring problems sometimes share an answer ("7" and "7", "5" and "x=5"): those
        # pairs are not negatives, so gold-vs-gold equivalence decides which pairs count.
        same = grade_math_batch([("\\boxed{" + r["answer"] + "}", o) for r, o in zip(recs, others)])
        pairs = [(r["metadata"]["solution"], o) for r, o, s in zip(recs, others, same) if s.score == 0.0]
        assert len(pairs) >= 0.98 * n
        grades = grade_math_batch(pairs)
        wrong_passes = [p[1] for p, g in zip(pairs, grades) if g.score != 0.0]
        assert len(wrong_passes) <= 0.01 * len(pairs), f"{name}: {wrong_passes}"


EQUIVALENT = [
    # (model answer, gold)
    ("\\frac{1}{2}", "0.5"),
    ("0.5", "\\frac12"),
    ("\\dfrac{14}{3}", "\\frac{14}{3}"),
    ("50\\%", "50"),
    ("0.5", "50\\%"),
    ("30^\\circ", "30"),
    ("30", "30^{\\circ}"),
    ("(2, 3]", "(2,3]"),
    ("[-2, 7]", "x \\in [-2,7]"),
    ("\\{1, 2, 3\\}", "\\{3,2,1\\}"),
    ("1, 2, 3", "3, 2, 1"),
    ("5\\text{ cm}", "5"),
    ("\\$18.90", "18.90"),
    ("\\text{Monday}", "\\text{Monday}"),
    ("\\text{(C)}", "\\text{(C)}"),
    ("2\\sqrt{3}", "\\sqrt{12}"),
    ("x=5", "5"),
    ("10^{3}", "1000"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("27", 27.0),
    ("70", 70),
]
NOT_EQUIVALENT = [
    ("\\frac{1}{3}", "0.5"),
    ("0.33", "\\frac{1}{3}"),
    ("(2, 3)", "(2,3]"),
    ("\\{1, 2\\}", "\\{1,2,3\\}"),
    ("30", "60^\\circ"),
    ("\\text{Tuesday}", "\\text{Monday}"),
    ("1-\\frac{1}{e}", "1+\\frac{1}{e}"),
    ("2\\sqrt{2}", "\\sqrt{12}"),
    ("-5", "5"),
    ("(1, 2)", "(2, 1)"),
    ("x^2+1", "x^2-1"),
    ("28", 27.0),
]


@pytest.mark.parametrize("answer,gold", EQUIVALENT)
def test_equivalent_answers_score_one(answer, gold):
    assert math_reward(f"Working... so the answer is $\\boxed{{{answer}}}$.", gold) == 1.0


@pytest.mark.parametrize("answer,gold", NOT_EQUIVALENT)
def test_non_equivalent_answers_score_zero(answer, gold):
    assert math_reward(f"The answer is $\\boxed{{{answer}}}$.", gold) == 0.0


def test_last_boxed_wins_and_fallbacks():
    assert math_reward("First \\boxed{3}, then corrected: \\boxed{4}", "4") == 1.0
    assert math_reward("First \\boxed{4}, then corrected: \\boxed{3}", "4") == 0.0
    assert math_reward("\\boxed 7", "7") == 1.0
    assert math_reward("\\fbox{12}", "12") == 1.0
    # No \boxed{}: the end of the response is searched ("the answer is ...", markdown bold).
    assert math_reward("Adding up, the final answer is $\\frac{3}{4}$.", "0.75") == 1.0
    assert math_reward("Therefore the answer is **73**", "73") == 1.0
    assert grade_math("I don't know.", "5").score == 0.0
    assert grade_math("", "5").reason == "no_answer"


def test_last_boxed_extraction():
    assert last_boxed("a \\boxed{\\frac{1}{2}} b \\boxed{x^{2}}") == "x^{2}"
    assert last_boxed("\\boxed{1} and an unterminated \\boxed{2") == "1"
    assert last_boxed("no answer") is None
    assert last_boxed("\\boxed{\\{1,2\\}}") == "\\{1,2\\}"


def test_gold_normalisation():
    assert gold_to_latex(27.0) == "\\boxed{27}"
    assert gold_to_latex("$x$") == "$x$"
    assert gold_to_latex("\\frac12") == "\\boxed{\\frac12}"
    with pytest.raises(TypeError):
        gold_to_latex(True)


PATHOLOGICAL = [
    "\\boxed{9^{9^{9^{9}}}}",
    "x" * 100_000,
    "\\boxed{" + "{" * 20_000 + "1" + "}" * 20_000 + "}",
    "\\boxed{\\frac{1}{\\sqrt{\\left(}}",
    "\\boxed{\\frac{",
    "$" * 50_000,
    "\\boxed{" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "}",
    "\\boxed{10^{10^{10^{10^{10}}}}!}",
]


@pytest.mark.timeout(120)
def test_pathological_answers_score_zero_with_a_reason():
    grades = grade_math_batch([(resp, "1") for resp in PATHOLOGICAL])
    for resp, grade in zip(PATHOLOGICAL, grades):
        assert grade.score == 0.0, resp[:40]
        assert grade.reason in {"wrong", "timeout", "unparsable", "no_answer"} or grade.reason.startswith("error"), grade
    # The pool survives: a normal answer right after grades correctly.
    assert math_reward("\\boxed{2}", "2") == 1.0


@pytest.mark.timeout(60)
def test_hard_timeout_bounds_a_single_call():
    grade = grade_math("\\boxed{9^{9^{9^{9}}}}", "1", timeout=0.5)
    assert grade == (0.0, "timeout")


def test_non_string_response_is_a_zero_not_a_crash():
    assert grade_math(None, "1").score == 0.0  # type: ignore[arg-type]


def test_label_dispatch():
    assert grade_label("\\boxed{\\frac{1}{2}}", {"task": "math", "answer": "0.5"}) == (1.0, "correct")
    assert grade_label("\\boxed{3}", '{"task": "math", "answer": "4"}') == (0.0, "wrong")
    with pytest.raises(KeyError, match="answer"):
        grade_label("\\boxed{3}", {"task": "math"})


def test_fast_path_agrees_with_math_verify():
    from apmpo_openrlhf.rewards.math_grading import _fast_grade, _grade_in_worker

    cases = [("\\boxed{007}", "\\boxed{7}"), ("\\boxed{7}", "\\boxed{8}"), ("\\boxed{-3}", "\\boxed{-3}"),
             ("\\boxed{\\frac {1}{2}}", "\\boxed{\\frac{1}{2}}"), ("\\boxed{+4}", "\\boxed{4}")]
    for pred, gold in cases:
        fast = _fast_grade(pred, gold)
        assert fast is not None
        assert fast.score == _grade_in_worker(pred, gold, True).score, (pred, gold)
    assert _fast_grade("\\boxed{0.5}", "\\boxed{\\frac12}") is None  # left to math-verify


def test_timeouts_are_logged(caplog):
    with caplog.at_level("WARNING", logger="apmpo_openrlhf.rewards.math_grading"):
        grade = grade_math("\\boxed{9^{9^{9^{9}}}}", "2", timeout=0.5)
    assert grade.reason == "timeout"
    assert any("timeout" in rec.getMessage() for rec in caplog.records)
