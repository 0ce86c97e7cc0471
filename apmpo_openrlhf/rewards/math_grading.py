"""Binary math reward: the response's final answer vs the gold answer, compared by math-verify.

``verify(parse(gold), parse(pred))`` with the gold first (math-verify is asymmetric) and the gold
inside a LaTeX environment (``\\boxed{...}``). Parsing and verification run in a
:class:`~apmpo_openrlhf.rewards.grader_pool.GraderPool` worker: inside the worker (a main thread)
math-verify's own SIGALRM timeouts work as a soft limit, and the pool kills the worker as the hard
limit, so a pathological answer costs at most ``timeout`` seconds in any calling thread.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Iterable, NamedTuple

from .extraction import FALLBACK_TAIL_CHARS, MAX_ANSWER_CHARS, answer_parts, outer_boxed, strip_markdown_emphasis
from .grader_pool import GradingTimeout, GradingWorkerError, default_pool
from .registry import TIMEOUT_ENV, register_reward, timeout_from_env  # noqa: F401 - TIMEOUT_ENV: launcher's import

logger = logging.getLogger(__name__)

# The time limit where neither the caller nor $APMPO_GRADING_TIMEOUT_S (TIMEOUT_ENV) gives one.
MATH_TIMEOUT_S = 5.0


def _soft_limits(timeout: float) -> tuple[int, int]:
    """math-verify's own limits inside the worker (whole seconds: SIGALRM) for each parse and for
    verify: a fifth and two fifths of the hard limit (two parses and a verify fit in it), at least
    1 s. They stop most slow answers without killing the worker; the hard limit stops the rest."""
    return max(1, int(timeout / 5)), max(1, int(2 * timeout / 5))


_TEXTBF_RE = re.compile(r"\\textbf\{([^{}]*)\}")


class Grade(NamedTuple):
    score: float
    reason: str  # "correct" | "wrong" | "no_answer" | "unparsable" | "timeout" | "error: ..."


def gold_to_latex(gold: object) -> str:
    """The gold answer as LaTeX math-verify can parse: ints/floats normalised, wrapped in \\boxed{}."""
    if isinstance(gold, bool):
        raise TypeError("gold answer must be text or a number, got bool")
    if isinstance(gold, float) and gold.is_integer():
        gold = int(gold)
    if isinstance(gold, (list, tuple)):
        gold = ", ".join(str(g).strip().strip("$") for g in gold)
    text = str(gold).strip()
    if "\\boxed" in text or (text.startswith("$") and text.endswith("$") and len(text) > 1):
        return text
    return "\\boxed{" + text + "}"


def _clean_box(content: str) -> str:
    # Formatting that math-verify misreads: **73**, \textbf{(073)} and a sentence's final period.
    content = _TEXTBF_RE.sub(r"\1", strip_markdown_emphasis(content))
    return content.strip().rstrip(".").strip()


def _answer_from_boxes(found: list[str], gold: object) -> str | None:
    last = _clean_box(found[-1])
    if len(found) > 1 and len(answer_parts(last)) == 1 and len(answer_parts(gold_to_latex(gold))) > 1:
        distinct = {re.sub(r"\s+", "", b): b for b in map(_clean_box, found) if b}
        combined = ", ".join(distinct.values())
        if len(distinct) > 1 and len(combined) <= MAX_ANSWER_CHARS:
            return combined
    return last if last and len(last) <= MAX_ANSWER_CHARS else None


def graded_answer(response: str, gold: object) -> str | None:
    """The boxed answer of ``response`` that is compared with ``gold`` (None: no usable box).

    The last box, except when the gold has several parts (``1, 2, 3``, ``\\{1,2,3\\}``: see
    :func:`~apmpo_openrlhf.rewards.extraction.answer_parts`) and the response gives them in several
    boxes: then the distinct boxes joined by commas (``\\boxed{1} \\boxed{2} \\boxed{3}`` ->
    ``1, 2, 3``), graded like one box holding them all, i.e. as a set. A last box that holds several
    parts itself is the answer alone (the response's final word). Raises TypeError on a bool gold.
    """
    found = outer_boxed(response)
    return _answer_from_boxes(found, gold) if found else None


def prepare_prediction(response: str, gold: object) -> str | None:
    """The part of the response given to the parser: ``\\boxed{graded_answer}``, or without a box
    the response's tail (math-verify looks there for "the answer is ..." and the last expression)."""
    found = outer_boxed(response)
    if not found:
        tail = strip_markdown_emphasis(response[-FALLBACK_TAIL_CHARS:]).strip()
        return tail or None
    answer = _answer_from_boxes(found, gold)
    return None if answer is None else "\\boxed{" + answer + "}"


def _grade_in_worker(pred_text: str, gold_latex: str, boxed: bool, parse_s: int = 1, verify_s: int = 2) -> Grade:
    """Runs inside a pool worker (main thread: SIGALRM timeouts are allowed). math-verify turns its
    own timeouts into an empty parse or a False verify: a step that ran to its limit is a timeout."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    def timed(fn, *args, **kwargs):
        start = time.monotonic()
        out = fn(*args, **kwargs)
        return out, time.monotonic() - start

    gold, took = timed(parse, gold_latex, extraction_config=[LatexExtractionConfig()], parsing_timeout=parse_s)
    if not gold:
        return Grade(0.0, "timeout" if took >= parse_s * 0.95 else "error: gold answer unparsable")
    configs = [LatexExtractionConfig()] if boxed else [LatexExtractionConfig(), ExprExtractionConfig()]
    pred, took = timed(parse, pred_text, extraction_config=configs, parsing_timeout=parse_s)
    if not pred:
        return Grade(0.0, "timeout" if took >= parse_s * 0.95 else "unparsable")
    ok, took = timed(verify, gold, pred, timeout_seconds=verify_s)
    if ok:
        return Grade(1.0, "correct")
    return Grade(0.0, "timeout" if took >= verify_s * 0.95 else "wrong")


_INTEGER_RE = re.compile(r"^[+-]?\d{1,50}$")


def _fast_grade(pred: str, gold_latex: str) -> Grade | None:
    """Decide without math-verify when it is certain: identical boxed text, or two integers."""
    if not (pred.startswith("\\boxed{") and gold_latex.startswith("\\boxed{")):
        return None
    a = re.sub(r"\s+", "", pred[7:-1])
    b = re.sub(r"\s+", "", gold_latex[7:-1])
    if a == b:
        return Grade(1.0, "correct")
    if _INTEGER_RE.match(a) and _INTEGER_RE.match(b):
        return Grade(1.0, "correct") if int(a) == int(b) else Grade(0.0, "wrong")
    return None


def _task(response: str, gold: object) -> tuple[str, str, bool] | Grade:
    if not isinstance(response, str):
        return Grade(0.0, f"error: response must be str, got {type(response).__name__}")
    try:
        gold_latex = gold_to_latex(gold)
    except TypeError as exc:
        return Grade(0.0, f"error: {exc}")
    pred = prepare_prediction(response, gold_latex)
    if pred is None:
        return Grade(0.0, "no_answer")
    fast = _fast_grade(pred, gold_latex)
    if fast is not None:
        return fast
    return pred, gold_latex, pred.startswith("\\boxed{")


def _from_exception(exc: BaseException) -> Grade:
    if isinstance(exc, GradingTimeout):
        return Grade(0.0, "timeout")
    return Grade(0.0, f"error: {exc}"[:300])


def _log_if_abnormal(grade: Grade, pred: str) -> Grade:
    if grade.reason == "timeout" or grade.reason.startswith("error"):
        logger.warning("math grading scored 0 (%s) for answer %.80r", grade.reason, pred)
    return grade


def default_timeout() -> float:
    """$APMPO_GRADING_TIMEOUT_S if set (seconds > 0), else MATH_TIMEOUT_S."""
    seconds = timeout_from_env()
    return MATH_TIMEOUT_S if seconds is None else seconds


def grade_math(response: str, gold: object, *, timeout: float | None = None) -> Grade:
    """Score and reason for one response. Never raises for bad model output; never blocks > timeout
    (default: :func:`default_timeout`)."""
    timeout = default_timeout() if timeout is None else timeout
    task = _task(response, gold)
    if isinstance(task, Grade):
        return task
    try:
        grade = default_pool().call(_grade_in_worker, *task, *_soft_limits(timeout), timeout=timeout)
    except (GradingTimeout, GradingWorkerError) as exc:
        grade = _from_exception(exc)
    return _log_if_abnormal(grade, task[0])


def grade_math_batch(
    pairs: Iterable[tuple[str, object]], *, timeout: float | None = None
) -> list[Grade]:
    """:func:`grade_math` over many (response, gold) pairs, spread over all pool workers."""
    timeout = default_timeout() if timeout is None else timeout
    tasks = [_task(r, g) for r, g in pairs]
    todo = [t for t in tasks if not isinstance(t, Grade)]
    soft = _soft_limits(timeout)
    graded = default_pool().map(_grade_in_worker, [(*t, *soft) for t in todo], timeout=timeout, on_error=_from_exception)
    done = iter(_log_if_abnormal(g, t[0]) for g, t in zip(graded, todo))
    return [t if isinstance(t, Grade) else next(done) for t in tasks]


@register_reward("math", detailed=grade_math, timeout_arg="timeout")
def math_reward(response: str, gold: object, *, timeout: float | None = None) -> float:
    """1.0 if the final answer (:func:`graded_answer`: the last \\boxed{}, or the boxes together
    when the gold has several parts; without a box the response's end) equals ``gold``, else 0.0."""
    return grade_math(response, gold, timeout=timeout).score


def math_reward_batch(pairs: Iterable[tuple[str, object]]) -> list[float]:
    return [g.score for g in grade_math_batch(pairs)]
