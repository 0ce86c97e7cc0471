"""Grade responses with apmpo_openrlhf.rewards (the training reward; no second grader here)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from apmpo_openrlhf.rewards import grade_label

from .problems import Problem

# SQL grading runs in sqlite's C code, which releases the GIL: threads overlap it.
_SQL_THREADS = 4


class SampleGrade(NamedTuple):
    correct: bool
    score: float
    reason: str
    extracted: Any  # the answer the grader read from the response (None if it found none)


def extract_answer(task: str, response: str, label: dict | None = None):
    """The answer the reward reads from ``response``, for the per-sample JSONL (math: the boxed answer
    graded, i.e. the boxes joined when the gold has several parts and the response boxes each)."""
    from apmpo_openrlhf.rewards import extraction

    if task == "math":
        if label is not None and "answer" in label:
            from apmpo_openrlhf.rewards.math_grading import graded_answer

            try:
                return graded_answer(response, label["answer"])
            except TypeError:  # a gold that is not text or a number: the grade says so
                pass
        return extraction.last_boxed(response)
    if task == "sql":
        return extraction.extract_sql(response) or None
    if task == "choice":
        from apmpo_openrlhf.rewards.choice_grading import extract_choice_answer

        return extract_choice_answer(response)
    return None


def _grade_one(args: tuple[str, dict]) -> tuple[float, str]:
    response, label = args
    if label["task"] == "sql":
        # The harness resolved the database folder from its own flags; $APMPO_SQL_DB_ROOT (the
        # training-time relocation knob of grade_label) must not silently replace it.
        from apmpo_openrlhf.rewards.sql_grading import grade_sql, resolve_db_path

        db_path = resolve_db_path(label, env_override=False)
        return tuple(grade_sql(response, label["gold_sql"], db_path, dialect=label.get("dialect", "spider")))
    return grade_label(response, label)


def grade_problems(problems: list[Problem], responses: list[str]) -> list[SampleGrade]:
    """One grade per (problem, response) pair, in order. Math goes through the rewards' process pool
    (hard per-answer timeout); SQL and choices run in threads (their graders bound their own time)."""
    if len(problems) != len(responses):
        raise ValueError("grade_problems: problems and responses differ in length")
    results: list[tuple[float, str] | None] = [None] * len(problems)
    math_idx = [i for i, p in enumerate(problems) if p.label["task"] == "math"]
    other_idx = [i for i, p in enumerate(problems) if p.label["task"] != "math"]
    if math_idx:
        from apmpo_openrlhf.rewards.math_grading import grade_math_batch

        grades = grade_math_batch([(responses[i], problems[i].label["answer"]) for i in math_idx])
        for i, g in zip(math_idx, grades):
            results[i] = (g.score, g.reason)
    if other_idx:
        with ThreadPoolExecutor(_SQL_THREADS) as pool:
            for i, r in zip(other_idx, pool.map(_grade_one, [(responses[i], problems[i].label) for i in other_idx])):
                results[i] = r
    out = []
    for p, resp, (score, reason) in zip(problems, responses, results):
        out.append(SampleGrade(score >= 1.0, float(score), reason, extract_answer(p.label["task"], resp, p.label)))
    return out
