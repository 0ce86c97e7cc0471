"""Rewards of the synthetic arithmetic task: ``arithmetic`` (the first integer of the response is the
answer) and ``arithmetic_exact`` (the whole response is the answer)."""

from __future__ import annotations

import re

from .registry import register_reward

_INTEGER = re.compile(r"-?\d+")
# Only the start of an (untrusted) response is read: the answer comes first and int() of a huge
# digit string is slow.
_MAX_CHARS = 64


@register_reward("arithmetic")
def arithmetic_reward(response: str, gold: str) -> float:
    """1.0 if the first integer in ``response`` equals ``gold`` (e.g. "7" for "3+4="), else 0.0."""
    if not isinstance(response, str):
        return 0.0
    match = _INTEGER.search(response[:_MAX_CHARS])
    if match is None:
        return 0.0
    try:
        return 1.0 if int(match.group()) == int(str(gold).strip()) else 0.0
    except ValueError:
        return 0.0


@register_reward("arithmetic_exact")
def arithmetic_exact_reward(response: str, gold: str) -> float:
    """1.0 if the whole response (surrounding whitespace ignored) is exactly the answer: "64" for
    "23+41=" scores, "64 " scores, "640", "64+1", "064" and "6" do not. The testbed's reward: a
    policy must end its answer (emit the end token) at the right place, not just start it right."""
    if not isinstance(response, str) or len(response) > _MAX_CHARS:
        return 0.0
    return 1.0 if response.strip() == str(gold).strip() else 0.0
