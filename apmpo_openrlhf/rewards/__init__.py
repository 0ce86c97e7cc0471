"""Verifiable rewards (math, SQL execution, multiple choice), shared by training and evaluation.

Public API: :func:`math_reward`, :func:`sql_reward`, :func:`choice_reward` (each returns 1.0 or
0.0), the registry (:func:`register_reward`, :func:`get_reward`, :func:`grade_label`), and the
OpenRLHF entry file ``openrlhf_reward.py``. Model output is untrusted: graders never raise on it
and never block longer than their timeout.
"""

from .registry import available_rewards, get_reward, grade_label, parse_label, register_reward

__all__ = [
    "available_rewards",
    "choice_reward",
    "get_reward",
    "grade_label",
    "math_reward",
    "parse_label",
    "register_reward",
    "sql_reward",
]


def __getattr__(name: str):
    # Lazy: importing the package must not import sympy/math-verify or sqlite graders.
    if name in ("math_reward", "math_reward_batch", "grade_math", "grade_math_batch"):
        from . import math_grading

        return getattr(math_grading, name)
    if name in ("sql_reward", "grade_sql"):
        from . import sql_grading

        return getattr(sql_grading, name)
    if name in ("choice_reward", "grade_choice"):
        from . import choice_grading

        return getattr(choice_grading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
