"""sql_reward: every Spider dev gold query against itself, perturbed queries, the official
comparison semantics, and hostile SQL on a copy of a Spider database (file stays byte-identical)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from apmpo_openrlhf.rewards import grade_label, sql_reward
from apmpo_openrlhf.rewards.extraction import extract_sql
from apmpo_openrlhf.rewards.sql_grading import execute_readonly, grade_sql, resolve_db_path, results_match


@pytest.fixture(scope="module")
def spider(data_dir) -> Path:
    root = data_dir / "sql" / "spider"
    if not (root / "dev.json").is_file():
        pytest.skip(f"Spider dev.json absent under {root}")
    return root


def _db(spider: Path, db_id: str) -> Path:
    return spider / "database" / db_id / f"{db_id}.sqlite"


def test_every_spider_gold_query_matches_itself(spider):
    dev = json.loads((spider / "dev.json").read_text())
    present = [ex for ex in dev if _db(spider, ex["db_id"]).is_file()]
    assert len({ex["db_id"] for ex in present}) == 19 and len(present) == 972
    failures = [
        (ex["db_id"], ex["query"], g.reason)
        for ex in present
        if (g := grade_sql(f"```sql\n{ex['query']}\n```", ex["query"], _db(spider, ex["db_id"]))).score != 1.0
    ]
    assert failures == []


def _drop_where(query: str) -> str | None:
    m = re.search(r"\s+WHERE\s+.*?(?=\s+(?:GROUP|ORDER|LIMIT)\b|$)", query, re.IGNORECASE | re.DOTALL)
    if not m or re.search(r"\b(?:INTERSECT|UNION|EXCEPT)\b|\(\s*SELECT", query, re.IGNORECASE):
        return None
    return query[: m.start()] + query[m.end():]


def test_perturbed_queries_score_zero(spider):
    dev = [ex for ex in json.loads((spider / "dev.json").read_text()) if _db(spider, ex["db_id"]).is_file()]
    checked = 0
    for ex in dev:
        perturbed = _drop_where(ex["query"])
        if perturbed is None:
            continue
        db = _db(spider, ex["db_id"])
        gold_rows = execute_readonly(db, ex["query"])
        pred_rows = execute_readonly(db, perturbed)
        if sorted(map(repr, gold_rows)) == sorted(map(repr, pred_rows)):
            continue  # the WHERE filtered nothing on this database: not a negative
        assert sql_reward(perturbed, ex["query"], db) == 0.0, (ex["query"], perturbed)
        checked += 1
    assert checked >= 150

    db = _db(spider, "concert_singer")
    gold = "SELECT name FROM singer WHERE age > 30"
    assert sql_reward("SELECT name FROM singer WHERE age > 30", gold, db) == 1.0
    assert sql_reward("SELECT country FROM singer WHERE age > 30", gold, db) == 0.0  # wrong column
    assert sql_reward("SELECT name FROM singer", gold, db) == 0.0  # missing WHERE
    assert sql_reward("SELECT nme FROM singer", gold, db) == 0.0  # error


def test_comparison_semantics(spider):
    db = _db(spider, "concert_singer")
    gold_ordered = "SELECT name, age FROM singer ORDER BY age"
    # Column order does not matter (Spider test-suite permutation), row order does with ORDER BY.
    assert sql_reward("SELECT age, name FROM singer ORDER BY age", gold_ordered, db) == 1.0
    assert sql_reward("SELECT name, age FROM singer ORDER BY age DESC", gold_ordered, db) == 0.0
    assert sql_reward("SELECT name, age FROM singer ORDER BY age DESC", gold_ordered, db, order_matters=False) == 1.0
    gold = "SELECT name, age FROM singer"
    assert sql_reward("SELECT name, age FROM singer ORDER BY age DESC", gold, db) == 1.0
    # Spider compares multisets: duplicated rows differ; BIRD compares sets: they do not.
    dup = "SELECT name, age FROM singer UNION ALL SELECT name, age FROM singer"
    assert sql_reward(dup, gold, db) == 0.0
    assert sql_reward(dup, gold, db, dialect="bird") == 1.0
    assert sql_reward("SELECT age, name FROM singer", gold, db, dialect="bird") == 0.0


def test_results_match_unit():
    assert results_match([(1, "a"), (1, "a")], [(1, "a"), (1, "a")], order_matters=False, dialect="spider")
    assert not results_match([(1, "a"), (2, "b")], [(1, "a"), (1, "a")], order_matters=False, dialect="spider")
    assert results_match([(1, "a"), (2, "b")], [("b", 2), ("a", 1)], order_matters=False, dialect="spider")
    assert not results_match([(1, "a"), (2, "b")], [("b", 2), ("a", 1)], order_matters=True, dialect="spider")
    assert results_match([], [], order_matters=False, dialect="spider")
    assert not results_match([(1,)], [], order_matters=False, dialect="spider")
    assert results_match([(1,), (1,)], [(1,)], order_matters=False, dialect="bird")


def test_sql_extraction():
    assert extract_sql("Here:\n```sql\nSELECT 1\n```\nand better:\n```sql\nSELECT 2;\n```") == "SELECT 2;"
    assert extract_sql("SELECT 3") == "SELECT 3"
    assert extract_sql("text\n```sql\nSELECT 4 FROM t") == "SELECT 4 FROM t"  # truncated generation
    assert extract_sql("```\nSELECT 5\n```") == "SELECT 5"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


HOSTILE = [
    "DROP TABLE city",
    "DELETE FROM city",
    "UPDATE city SET Population = 0",
    "INSERT INTO city (Name) VALUES ('x')",
    "CREATE TABLE t(x)",
    "ATTACH DATABASE '{tmp}/evil.db' AS evil",
    "PRAGMA journal_mode=WAL",
    "PRAGMA writable_schema=ON",
    "VACUUM",
    "SELECT load_extension('libevil')",
    "SELECT count(*) FROM city; DROP TABLE city",
    "BEGIN; DELETE FROM city; COMMIT",
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
    "SELECT count(*) FROM city a, city b, city c ORDER BY 1",
    "SELECT * FROM city a, city b, city c",
    "VACUUM INTO '{tmp}/copy.db'",
    "REINDEX",
    "SELECT count(*) FROM city\x00; DROP TABLE city",
]


@pytest.mark.timeout(120)
def test_hostile_sql_cannot_change_the_database(spider, tmp_path):
    db = tmp_path / "world_1" / "world_1.sqlite"
    db.parent.mkdir()
    shutil.copyfile(_db(spider, "world_1"), db)
    before = _sha256(db)
    gold = "SELECT count(*) FROM city"
    for attack in HOSTILE:
        sql = attack.format(tmp=tmp_path)
        grade = grade_sql(f"```sql\n{sql}\n```", gold, db, timeout_s=1.0, max_rows=10_000)
        assert grade.score == 0.0, sql
        assert grade.reason == "timeout" or grade.reason.startswith("sql_error"), (sql, grade)
        assert _sha256(db) == before, sql
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["world_1.sqlite"]
    # The database still answers normally.
    assert sql_reward(gold, gold, db) == 1.0
    assert sqlite3.connect(db).execute("SELECT count(*) FROM city").fetchone()[0] > 0


def test_label_dispatch_and_db_resolution(spider, monkeypatch):
    label = {"task": "sql", "gold_sql": "SELECT count(*) FROM singer", "db_id": "concert_singer",
             "dialect": "spider", "db_root": str(spider / "database")}
    assert grade_label("```sql\nSELECT count(*) FROM singer\n```", json.dumps(label)) == (1.0, "correct")
    monkeypatch.setenv("APMPO_SQL_DB_ROOT", "/nonexistent")
    assert resolve_db_path(label) == Path("/nonexistent/concert_singer/concert_singer.sqlite")
    score, reason = grade_label("SELECT 1", label)
    assert score == 0.0 and reason.startswith("error: gold query failed")
    for bad in ({**label, "db_id": "../../etc/passwd"}, {**label, "dialect": "mysql"}, {**label, "gold_sql": ""}):
        with pytest.raises(ValueError):
            grade_label("SELECT 1", bad)


def test_missing_database_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="SQLite database not found"):
        execute_readonly(tmp_path / "none.sqlite", "SELECT 1")
