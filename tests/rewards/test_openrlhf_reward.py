"""The OpenRLHF reward file through OpenRLHF's own loader and threaded call pattern
(SingleTurnAgentExecutor loads it by path and calls reward_func via asyncio.to_thread)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import apmpo_openrlhf.rewards as rewards_pkg

REWARD_FILE = Path(rewards_pkg.__file__).parent / "openrlhf_reward.py"
PROMPT = "<|im_start|>system\nPlease reason step by step.<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def executor():
    agent = pytest.importorskip("openrlhf.utils.agent")
    return agent.SingleTurnAgentExecutor(remote_rm_url=str(REWARD_FILE))


def _samples(spider_root: Path | None):
    math = {"task": "math", "answer": "\\frac{1}{2}"}
    samples = [
        (PROMPT + "Thus \\boxed{0.5}<|im_end|>", json.dumps(math), 1.0),
        (PROMPT + "Thus \\boxed{2}<|im_end|>", json.dumps(math), 0.0),
        (PROMPT + "\\boxed{9^{9^{9^{9}}}}<|im_end|>", json.dumps(math), 0.0),  # pathological
        (PROMPT + "x" * 100_000, json.dumps(math), 0.0),
        (PROMPT + "\\boxed{B}", json.dumps({"task": "choice", "answer": "B", "choices": ["1", "2", "3", "4"]}), 1.0),
        (PROMPT + "\\boxed{B}", "not json", 0.0),
        (PROMPT + "\\boxed{B}", json.dumps({"task": "no_such_task", "answer": "B"}), 0.0),
        (PROMPT + "\\boxed{B}", json.dumps({"task": "math"}), 0.0),
    ]
    if spider_root is not None:
        sql = {"task": "sql", "gold_sql": "SELECT count(*) FROM singer", "db_id": "concert_singer",
               "dialect": "spider", "db_root": str(spider_root / "database")}
        samples += [
            (PROMPT + "```sql\nSELECT count(*) FROM singer\n```<|im_end|>", json.dumps(sql), 1.0),
            (PROMPT + "```sql\nDROP TABLE singer\n```", json.dumps(sql), 0.0),
        ]
    return samples


@pytest.mark.timeout(180)
def test_concurrent_calls_through_openrlhf(executor, data_dir):
    spider = data_dir / "sql" / "spider"
    samples = _samples(spider if spider.is_dir() else None) * 6

    async def run_all():
        # One call per sample, all in flight at once, as SingleTurnAgentExecutor.execute does.
        return await asyncio.gather(*(executor._fetch_rewards_via_func([q], [PROMPT], [lab]) for q, lab, _ in samples))

    results = asyncio.run(run_all())
    assert len(results) == len(samples)
    for (query, label, expected), result in zip(samples, results):
        info = result[0]
        assert isinstance(info["rewards"], float) and info["rewards"] == expected, (query[-60:], label, info)
        assert info["scores"] == info["rewards"]
        assert set(info["extra_logs"]) == {"reward_error", "reward_timeout", "reward_no_answer", "reward_time_s"}
        assert 0 <= info["extra_logs"]["reward_time_s"] < 60  # wall time of this grading
    by_label = {(q[-30:], lab): r[0]["extra_logs"] for (q, lab, _), r in zip(samples, results)}
    assert by_label[(samples[5][0][-30:], "not json")]["reward_error"] == 1.0
    assert any(logs["reward_timeout"] == 1.0 for logs in by_label.values())  # 9^9^9^9


def test_batch_return_shape():
    import importlib.util

    spec = importlib.util.spec_from_file_location("reward_func_file", REWARD_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lab = json.dumps({"task": "math", "answer": "3"})
    out = module.reward_func([PROMPT + "\\boxed{3}", PROMPT + "\\boxed{4}"], [PROMPT, PROMPT], [lab, lab])
    assert out["rewards"] == [1.0, 0.0] and out["scores"] == [1.0, 0.0]
    assert out["extra_logs"]["reward_error"] == 0.0
    # The prompt is stripped: the \boxed{} instruction in the prompt is not an answer.
    assert module.response_from_query(PROMPT + "answer", PROMPT) == "answer"
    assert module.response_from_query("garbled" + PROMPT[7:] + "ok<|im_end|>", PROMPT) == "ok"
