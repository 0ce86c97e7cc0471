"""Reward registry: task name -> reward function, and dispatch on a training label.

A reward function takes the response text and the gold data and returns a float in [0, 1]::

    from apmpo_openrlhf.rewards.registry import register_reward

    @register_reward("arithmetic")
    def arithmetic_reward(response: str, gold: str) -> float: ...

Labels (one JSON schema for every task; see docs/rewards.md) name the task in ``"task"``; by
default the gold is ``label["answer"]`` and the function is called as ``fn(response, answer)``.
Tasks with other gold data pass ``label_to_args`` (label dict -> a tuple of positional args
after the response, or a dict of keyword args). ``detailed`` optionally gives a function with the same arguments returning a
``(score, reason)`` pair, used for logging why a response scored 0. A grader with a per-answer time
limit names its keyword in ``timeout_arg``: the run's ``reward.timeout_s`` is passed there on both
backends (``RewardSpec.grade(..., timeout_s=)``, or bound once with ``RewardSpec.with_timeout``).

Modules are imported lazily on first lookup: task ``name`` is looked for in
``apmpo_openrlhf.rewards.<module>`` (see ``_MODULES``; other names map to the module of the same
name), so a label naming a task loads its grader without importing every grader up front.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

_MODULES = {
    "math": "math_grading",
    "sql": "sql_grading",
    "choice": "choice_grading",
    "arithmetic": "arithmetic",
    "arithmetic_exact": "arithmetic",
}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# The per-answer grading time limit where no caller passes one: OpenRLHF's reward_func runs inside
# the vLLM engines, whose environment the launcher sets from reward.timeout_s.
TIMEOUT_ENV = "APMPO_GRADING_TIMEOUT_S"


def timeout_from_env() -> float | None:
    """$APMPO_GRADING_TIMEOUT_S in seconds (> 0), or None when it is not set."""
    value = os.environ.get(TIMEOUT_ENV)
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds > 0, got {value!r}")
    return seconds


def _answer_arg(label: Mapping[str, Any]) -> tuple:
    if "answer" not in label:
        raise KeyError(f"label for task {label.get('task')!r} has no 'answer' field")
    return (label["answer"],)


@dataclass(frozen=True)
class RewardSpec:
    name: str
    fn: Callable[..., float]
    label_to_args: Callable[[Mapping[str, Any]], tuple | dict]
    detailed: Callable[..., Any] | None = None
    timeout_arg: str | None = None  # the graders' keyword for a per-answer time limit in seconds
    timeout_s: float | None = None  # the limit grade() passes by default (None: the grader's own)

    def with_timeout(self, seconds: float | None) -> "RewardSpec":
        """This spec grading under ``seconds`` per answer (graders without a limit ignore it)."""
        if seconds is not None and not seconds > 0:
            raise ValueError(f"grading time limit must be > 0 seconds, got {seconds!r}")
        return dataclasses.replace(self, timeout_s=seconds)

    def grade(self, response: str, label: Mapping[str, Any], *, timeout_s: float | None = None) -> tuple[float, str]:
        """(score, reason) of ``response`` for ``label``; raises on a malformed label.

        ``timeout_s`` (default: the spec's bound limit) goes to the grader's ``timeout_arg``.
        """
        args = self.label_to_args(label)
        # label_to_args gives positional args (a tuple) or keyword args (a dict).
        pos, kw = ((), dict(args)) if isinstance(args, Mapping) else (tuple(args), {})
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        if timeout_s is not None and self.timeout_arg is not None:
            kw[self.timeout_arg] = timeout_s
        if self.detailed is not None:
            score, reason = self.detailed(response, *pos, **kw)
        else:
            score = self.fn(response, *pos, **kw)
            reason = "correct" if score >= 1.0 else "wrong"
        score = float(score)
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"reward {self.name!r} returned {score}, outside [0, 1]")
        return score, reason


_REGISTRY: dict[str, RewardSpec] = {}
_LOCK = threading.RLock()


def register_reward(
    name: str,
    *,
    label_to_args: Callable[[Mapping[str, Any]], tuple] | None = None,
    detailed: Callable[..., Any] | None = None,
    timeout_arg: str | None = None,
) -> Callable[[Callable[..., float]], Callable[..., float]]:
    """Decorator registering ``fn(response, *gold) -> float`` under task ``name``; ``timeout_arg``
    names the keyword (of ``detailed``, else of ``fn``) that takes a time limit in seconds."""
    if not _NAME_RE.match(name):
        raise ValueError(f"reward name must match {_NAME_RE.pattern}, got {name!r}")

    def decorate(fn: Callable[..., float]) -> Callable[..., float]:
        with _LOCK:
            existing = _REGISTRY.get(name)
            if existing is not None and existing.fn is not fn and (
                existing.fn.__module__, existing.fn.__qualname__) != (fn.__module__, fn.__qualname__):
                raise ValueError(f"reward {name!r} is already registered by {existing.fn.__module__}")
            _REGISTRY[name] = RewardSpec(name, fn, label_to_args or _answer_arg, detailed, timeout_arg)
        return fn

    return decorate


def get_reward_spec(name: str) -> RewardSpec:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise KeyError(f"invalid reward task name {name!r}")
    with _LOCK:
        spec = _REGISTRY.get(name)
        if spec is None:
            module = _MODULES.get(name, name)
            try:
                importlib.import_module(f"{__package__}.{module}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{__package__}.{module}":
                    raise
            spec = _REGISTRY.get(name)
        if spec is None:
            raise KeyError(f"unknown reward task {name!r}; known: {sorted(set(_REGISTRY) | set(_MODULES))}")
        return spec


def get_reward(name: str) -> Callable[..., float]:
    """The reward function registered as ``name`` (importing its module on first use)."""
    return get_reward_spec(name).fn


def available_rewards() -> list[str]:
    return sorted(set(_REGISTRY) | set(_MODULES))


def parse_label(label: Any) -> dict[str, Any]:
    """A label as a dict: accepts a dict or its JSON text; requires a string ``task`` field."""
    if isinstance(label, (bytes, bytearray)):
        label = label.decode("utf-8")
    if isinstance(label, str):
        try:
            label = json.loads(label)
        except json.JSONDecodeError as exc:
            raise ValueError(f"label is not valid JSON ({exc}): {label[:200]!r}") from None
    if not isinstance(label, Mapping):
        raise ValueError(f"label must be a JSON object, got {type(label).__name__}")
    task = label.get("task")
    if not isinstance(task, str):
        raise ValueError(f"label needs a string 'task' field naming the reward, got {task!r}")
    return dict(label)


def grade_label(response: str, label: Any, *, timeout_s: float | None = None) -> tuple[float, str]:
    """(score, reason) for ``response`` under ``label`` (dict or JSON text). Raises on bad labels.

    ``timeout_s``: per-answer time limit (default: $APMPO_GRADING_TIMEOUT_S, else the grader's own).
    """
    label = parse_label(label)
    timeout_s = timeout_from_env() if timeout_s is None else timeout_s
    return get_reward_spec(label["task"]).grade(response, label, timeout_s=timeout_s)
