"""reward.timeout_s on both backends: every timed grader (math, choice values, SQL) gets the limit,
and a timeout is counted under the same names everywhere, never silently a wrong answer; a local
run with a tiny limit shows the counts in metrics.jsonl and eval.jsonl."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from apmpo_openrlhf.config import load_config
from apmpo_openrlhf.local.metrics import read_metrics
from apmpo_openrlhf.local.trainer import Trainer
from apmpo_openrlhf.rewards import grade_label
from apmpo_openrlhf.rewards.outcomes import OUTCOME_KEYS, OutcomeCounter, outcome_flags
from apmpo_openrlhf.rewards.registry import TIMEOUT_ENV, get_reward_spec

SLOW_MATH = "\\boxed{9^{9^{9^{9}}}}"  # sympy evaluates the power tower until stopped
ENDLESS_SQL = "```sql\nWITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c\n```"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sql_label(tmp_path):
    (tmp_path / "tiny").mkdir()
    with sqlite3.connect(tmp_path / "tiny" / "tiny.sqlite") as db:
        db.execute("CREATE TABLE t (x INTEGER)")
        db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(5)])
    return {"task": "sql", "gold_sql": "SELECT count(*) FROM t", "db_id": "tiny", "db_root": str(tmp_path)}


@pytest.mark.timeout(120)
def test_the_limit_reaches_every_timed_grader(sql_label, monkeypatch):
    monkeypatch.delenv("APMPO_SQL_DB_ROOT", raising=False)
    math = get_reward_spec("math").with_timeout(0.5)
    assert math.grade(SLOW_MATH, {"task": "math", "answer": "1"}) == (0.0, "timeout")
    assert math.grade("\\boxed{1}", {"task": "math", "answer": "1"}) == (1.0, "correct")
    # a choice given as a value is compared by math-verify under the limit; its timeout stays a timeout
    choice = get_reward_spec("choice").with_timeout(0.5)
    assert choice.grade(SLOW_MATH, {"task": "choice", "answer": "A", "choices": ["2", "3"]}) == (0.0, "timeout")
    sql = get_reward_spec("sql").with_timeout(0.3)
    assert sql.grade(ENDLESS_SQL, sql_label) == (0.0, "timeout")
    assert sql.grade("```sql\nSELECT count(x) FROM t\n```", sql_label) == (1.0, "correct")
    # a grader without a time limit accepts the setting and has nothing to apply it to
    assert get_reward_spec("arithmetic").with_timeout(0.001).grade("7", {"answer": "7"}) == (1.0, "correct")
    # OpenRLHF: reward_func's grade_label reads the limit the launcher put in the environment
    monkeypatch.setenv(TIMEOUT_ENV, "0.3")
    assert grade_label(ENDLESS_SQL, sql_label) == (0.0, "timeout")
    assert grade_label(SLOW_MATH, {"task": "math", "answer": "1"}) == (0.0, "timeout")
    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match=TIMEOUT_ENV):
        grade_label("\\boxed{1}", {"task": "math", "answer": "1"})
    with pytest.raises(ValueError, match="> 0"):
        get_reward_spec("math").with_timeout(0)


def test_outcome_names_are_the_openrlhf_backend_metrics():
    from apmpo_openrlhf.rewards.openrlhf_reward import grade_one

    assert set(OUTCOME_KEYS.values()) == {"reward/timeouts", "reward/errors", "reward/no_answer"}
    assert outcome_flags("timeout") == {"reward_timeout": 1.0, "reward_error": 0.0, "reward_no_answer": 0.0}
    assert outcome_flags("error: gold answer unparsable")["reward_error"] == 1.0
    assert outcome_flags("sql_error: no such table") == outcome_flags("wrong") == outcome_flags("correct")
    counter = OutcomeCounter()
    for reason in ("timeout", "correct", "no_answer", "timeout", "error: x", "wrong"):
        counter.add_reason(reason)
    assert counter.take() == {"reward/graded": 6, "reward/timeouts": 2, "reward/errors": 1, "reward/no_answer": 1}
    assert counter.take()["reward/graded"] == 0
    # reward_func's per-sample extra_logs are the same flags
    assert grade_one("\\boxed{2}", "", json.dumps({"task": "math", "answer": "3"}))[1] == outcome_flags("wrong")
    assert grade_one("x", "", "not json")[1] == outcome_flags("error")


@pytest.mark.timeout(300)
def test_local_run_counts_grading_timeouts_in_training_and_eval(tmp_path, tiny_model_dir):
    """reward.task math with a 1 ms limit: no math-verify call can finish, so every answer is a
    timeout or has no answer at all, and both files say so."""
    problems = [("What is 2+3?", "5"), ("What is 7*6?", "42"), ("What is 10-4?", "6"), ("What is 3^2?", "9")]
    path = tmp_path / "math.jsonl"
    path.write_text("".join(json.dumps({"prompt": q, "label": json.dumps({"task": "math", "answer": a})}) + "\n"
                            for q, a in problems))
    cfg = load_config(REPO_ROOT / "configs" / "local" / "default.yaml", [
        f"output_dir={tmp_path / 'run'}", f"model.path={tiny_model_dir}", f"data.train_path={path}",
        f"data.eval_path={path}", "reward.task=math", "reward.timeout_s=0.001", "max_steps=1",
        "rollout.prompts_per_step=4", "rollout.n_samples_per_prompt=4", "rollout.max_new_tokens=6",
        "train.train_batch_size=16", "train.micro_batch_size=16", "eval.at_step0=true", "eval.n_samples_per_prompt=2",
        "local.num_threads=1", "local.progress_bar=false", "logging.tensorboard=false", "checkpoint.save_hf=false",
    ])
    Trainer(cfg).fit()
    out = Path(cfg.output_dir)
    (train,) = read_metrics(out / "metrics.jsonl")
    evals = read_metrics(out / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 1]
    for row, n in [(train, 16), *[(e, 8) for e in evals]]:
        assert row["reward/graded"] == n, row
        assert row["reward/timeouts"] > 0, row
        assert row["reward/timeouts"] + row["reward/no_answer"] == n, row  # nothing was graded wrong
        assert row["reward/errors"] == 0, row
    assert train["reward_mean"] == 0.0
