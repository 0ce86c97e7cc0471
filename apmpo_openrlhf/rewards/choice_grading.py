"""Multiple-choice reward (Geometry3K): the chosen letter, or the chosen value, vs the gold choice.

The answer is the last \\boxed{} (else an "answer is X" phrase, else a lone letter on the last
line). A letter A-H is compared with the gold letter; any other answer is compared, when the
choices are known, with the gold choice's value (numerically, then with math-verify in the
grader pool, so a LaTeX value like ``8\\sqrt{3}`` matches ``8 \\sqrt { 3 }``).
"""

from __future__ import annotations

import re
from typing import Any, Mapping, NamedTuple, Sequence

from .extraction import MAX_ANSWER_CHARS, last_boxed, strip_markdown_emphasis
from .registry import register_reward

LETTERS = "ABCDEFGH"
_LETTER_RE = re.compile(r"^\(?\s*([A-H])\s*\)?(?:[.:)]|\s|$)")
# Keyword case-insensitive, letter upper-case only ("the answer is a triangle" names no choice).
_ANSWER_PHRASE_RE = re.compile(
    r"(?i:answer|choice|option)\s*(?i:is|:)?\s*[:\s]*\(?\$?\\?(?:text\{|textbf\{|mathrm\{)?\s*([A-H])\b"
)
_TEXT_WRAPPER_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")


class Grade(NamedTuple):
    score: float
    reason: str


def _clean(answer: str) -> str:
    answer = strip_markdown_emphasis(answer).strip().strip("$").strip()
    answer = _TEXT_WRAPPER_RE.sub(r"\1", answer)
    return answer.strip()


def extract_choice_answer(response: str) -> str | None:
    """The answer text (a letter or a value) given in ``response``, or None."""
    boxed = last_boxed(response)
    if boxed is not None:
        return _clean(boxed) or None
    tail = strip_markdown_emphasis(response[-2000:])
    phrases = _ANSWER_PHRASE_RE.findall(tail)
    if phrases:
        return phrases[-1]
    lines = [ln for ln in tail.strip().splitlines() if ln.strip()]
    if lines:
        m = _LETTER_RE.match(_clean(lines[-1]))
        if m and len(_clean(lines[-1])) <= 4:
            return m.group(1)
    return None


def _as_letter(answer: str) -> str | None:
    m = _LETTER_RE.match(answer)
    return m.group(1) if m else None


def _gold_index(gold: str, choices: Sequence[str] | None) -> int | None:
    if len(gold) == 1 and gold.upper() in LETTERS:
        idx = LETTERS.index(gold.upper())
        if choices is not None and idx >= len(choices):
            raise ValueError(f"gold letter {gold!r} but only {len(choices)} choices")
        return idx
    if choices is not None:
        for i, c in enumerate(choices):
            if _normalise_value(str(c)) == _normalise_value(gold):
                return i
    return None


def _normalise_value(value: str) -> str:
    return re.sub(r"\s+", "", value).rstrip(".")


def _float(value: str) -> float | None:
    try:
        return float(_normalise_value(value).replace(",", ""))
    except ValueError:
        return None


def _compare_values(pred: str, gold_value: str, timeout: float | None) -> Grade:
    if _normalise_value(pred) == _normalise_value(gold_value):
        return Grade(1.0, "correct")
    a, b = _float(pred), _float(gold_value)
    if a is not None and b is not None:
        return Grade(1.0, "correct") if abs(a - b) <= 1e-6 * max(1.0, abs(b)) else Grade(0.0, "wrong")
    from .math_grading import grade_math

    grade = grade_math("\\boxed{" + pred + "}", gold_value, timeout=timeout)
    # math-verify's timeouts and errors keep their reason: they are not wrong answers
    return Grade(grade.score, grade.reason if grade.reason in ("correct", "timeout") or grade.reason.startswith("error")
                 else "wrong")


def grade_choice(
    response: str, gold: Any, choices: Sequence[str] | None = None, *, timeout: float | None = None
) -> Grade:
    """(score, reason); ``gold`` is a letter (or the correct value when no letters are used).
    ``timeout``: the limit of a value comparison by math-verify (default: the math grader's)."""
    if not isinstance(response, str):
        return Grade(0.0, f"error: response must be str, got {type(response).__name__}")
    gold = str(gold).strip()
    if not gold:
        raise ValueError("gold choice must be a letter A-H or a value, got an empty string")
    gold_idx = _gold_index(gold, choices)
    answer = extract_choice_answer(response)
    if answer is None:
        return Grade(0.0, "no_answer")
    if len(answer) > MAX_ANSWER_CHARS:
        return Grade(0.0, "no_answer")
    letter = _as_letter(answer)
    if letter is not None and gold_idx is not None:
        return Grade(1.0, "correct") if LETTERS.index(letter) == gold_idx else Grade(0.0, "wrong")
    if gold_idx is not None and choices is not None:
        gold_value = str(choices[gold_idx])
    elif gold_idx is None:
        gold_value = gold
    else:
        return Grade(0.0, "wrong")  # a value answer, but the choices are unknown
    return _compare_values(answer, gold_value, timeout)


def choice_reward(response: str, gold: str, choices: list[str] | None = None, *, timeout: float | None = None) -> float:
    """1.0 if the response picks the gold choice (by letter A-D or by its value), else 0.0."""
    return grade_choice(response, gold, choices, timeout=timeout).score


def _label_to_args(label: Mapping[str, Any]) -> tuple:
    if "answer" not in label:
        raise KeyError("choice label has no 'answer' field")
    choices = label.get("choices")
    if choices is not None and (not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)):
        raise ValueError("choice label 'choices' must be a list of strings")
    return label["answer"], choices


register_reward("choice", label_to_args=_label_to_args, detailed=grade_choice, timeout_arg="timeout")(choice_reward)
