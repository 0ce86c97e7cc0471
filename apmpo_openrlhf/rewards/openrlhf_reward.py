"""Reward function file for OpenRLHF: ``--reward.remote_url /path/to/openrlhf_reward.py``.

OpenRLHF loads this file by path inside each vLLM rollout actor and calls
``reward_func(queries, prompts, labels)`` once per sample, from worker threads
(``asyncio.to_thread``). ``labels`` are the dataset's label column: JSON objects naming the task
(see docs/rewards.md), e.g. ``{"task": "math", "answer": "\\frac{1}{2}"}``.

Returns ``{"rewards", "scores", "extra_logs"}``: floats for a single sample (what OpenRLHF passes),
lists for several. Never raises and never returns None: a malformed label or a grader failure
gives reward 0 and counts in ``extra_logs["reward_error"]``; a timeout counts in
``extra_logs["reward_timeout"]`` (rewards/outcomes.py). Each answer is graded under
$APMPO_GRADING_TIMEOUT_S, which the launcher sets from ``reward.timeout_s``.
"""

from __future__ import annotations

import logging
import os
import sys
import time

# Loaded by file path: make the package importable even when it is not installed.
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _REPO_ROOT not in sys.path:
    sys.path.append(_REPO_ROOT)

from apmpo_openrlhf.rewards.outcomes import outcome_flags  # noqa: E402
from apmpo_openrlhf.rewards.registry import grade_label  # noqa: E402

logger = logging.getLogger("apmpo_openrlhf.rewards.openrlhf_reward")

# Chat-template end markers left in the decoded response (decoded with special tokens).
_ASSISTANT_MARKERS = ("<|im_start|>assistant", "<｜Assistant｜>", "<|start_header_id|>assistant<|end_header_id|>")
_END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<｜end▁of▁sentence｜>", "</s>", "<|eot_id|>")


def response_from_query(query: str, prompt: str) -> str:
    """The generated text: ``query`` is the decoded prompt + response, ``prompt`` the templated prompt."""
    if prompt and query.startswith(prompt):
        response = query[len(prompt):]
    else:
        # Decoding may not reproduce the prompt byte for byte; cut at the longest common prefix
        # when it covers most of the prompt, else at the last assistant turn marker.
        common = os.path.commonprefix([query, prompt or ""])
        if prompt and len(common) >= 0.9 * len(prompt):
            response = query[len(common):]
        else:
            response = query
            for marker in _ASSISTANT_MARKERS:
                cut = query.rfind(marker)
                if cut >= 0:
                    response = query[cut + len(marker):].lstrip("\n")
                    break
    for marker in _END_MARKERS:
        response = response.replace(marker, "")
    return response


def grade_one(query: str, prompt: str, label) -> tuple[float, dict[str, float]]:
    """(reward, extra_logs) for one sample; never raises."""
    try:
        # the time limit: $APMPO_GRADING_TIMEOUT_S (reward.timeout_s), read by grade_label
        score, reason = grade_label(response_from_query(query, prompt), label)
    except Exception as exc:  # noqa: BLE001 - a reward crash must not kill the rollout
        logger.warning("reward_func: scored 0 after %s: %s", type(exc).__name__, exc)
        return 0.0, outcome_flags("error")
    if reason.startswith("error"):
        logger.warning("reward_func: scored 0: %s", reason)
    return score, outcome_flags(reason)


def timed_grade_one(query: str, prompt: str, label) -> tuple[float, dict[str, float]]:
    """:func:`grade_one` with its wall time in ``extra_logs["reward_time_s"]`` (the trainer reports
    the grading time of a step from it: grading runs inside the engines, during generation)."""
    t0 = time.perf_counter()
    reward, logs = grade_one(query, prompt, label)
    logs["reward_time_s"] = time.perf_counter() - t0
    return reward, logs


def reward_func(queries, prompts, labels):
    """OpenRLHF entry point (see the module docstring)."""
    results = [timed_grade_one(q, p, lab) for q, p, lab in zip(queries, prompts, labels)]
    if len(results) == 1:
        reward, logs = results[0]
        return {"rewards": reward, "scores": reward, "extra_logs": logs}
    rewards = [r for r, _ in results]
    keys = results[0][1].keys() if results else ()
    logs = {k: sum(lg[k] for _, lg in results) / len(results) for k in keys}
    return {"rewards": rewards, "scores": rewards, "extra_logs": logs}
