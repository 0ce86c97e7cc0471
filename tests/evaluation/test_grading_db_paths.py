"""The harness grades SQL against the database folder its own flags resolved, even when the
training-time relocation variable $APMPO_SQL_DB_ROOT points somewhere else."""

from __future__ import annotations

from evaluation.benchmarks import load_benchmark
from evaluation.grading import grade_problems
from evaluation.problems import LoadOptions


def test_explicit_spider_db_dir_beats_env_override(data_dir, tmp_path, monkeypatch):
    bench = load_benchmark("spider", LoadOptions(data_dir=data_dir, limit=3, skip_missing_db=True))
    problems = bench.problems
    gold = [f"```sql\n{p.label['gold_sql']}\n```" for p in problems]
    wrong = ["```sql\nSELECT 1 WHERE 0\n```" for _ in problems]
    monkeypatch.setenv("APMPO_SQL_DB_ROOT", str(tmp_path / "no_databases_here"))
    grades = grade_problems(problems + problems, gold + wrong)
    assert [g.correct for g in grades] == [True] * len(problems) + [False] * len(problems)
    assert all(g.reason != "error" and "not found" not in g.reason for g in grades[: len(problems)])
