"""``python -m apmpo_openrlhf.data``: output format, determinism, labels that grade, errors."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from apmpo_openrlhf.data.__main__ import main
from apmpo_openrlhf.prompts import MATH_INSTRUCTION
from apmpo_openrlhf.rewards import grade_label

REPO = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_math_output_is_deterministic_and_grades(data_dir, tmp_path, capsys):
    args = ["math", "--data-dir", str(data_dir), "--limit", "20", "--benchmarks", "math_train,math500,amc23"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert json.loads(capsys.readouterr().out) == {"amc23": 20, "math500": 20, "math_train": 20}
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    for name in ("math_train", "math500", "amc23"):
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (tmp_path / "b" / f"{name}.jsonl").read_bytes()
    rows = _rows(tmp_path / "a" / "math500.jsonl")
    assert set(rows[0]) == {"id", "prompt", "label", "datasource"}
    assert rows[0]["prompt"][0] == {"role": "system", "content": MATH_INSTRUCTION}
    assert rows[0]["datasource"] == "math500"
    label = json.loads(rows[0]["label"])
    assert label == {"task": "math", "answer": "\\left( 3, \\frac{\\pi}{2} \\right)"}
    assert grade_label("\\boxed{\\left(3, \\frac{\\pi}{2}\\right)}", rows[0]["label"])[0] == 1.0

    assert main(["math", "--data-dir", str(data_dir), "--limit", "2", "--benchmarks", "aime24",
                 "--prompt-style", "r1", "--out", str(tmp_path / "r1")]) == 0
    (r1,) = _rows(tmp_path / "r1" / "aime24.jsonl")[:1]
    assert len(r1["prompt"]) == 1 and r1["prompt"][0]["content"].endswith(MATH_INSTRUCTION)


def test_math_train_skips_the_two_broken_records(data_dir, tmp_path, capsys):
    assert main(["math", "--data-dir", str(data_dir), "--benchmarks", "math_train", "--out", str(tmp_path)]) == 0
    assert len(_rows(tmp_path / "math_train.jsonl")) == 7498
    assert "train.jsonl:5530" in capsys.readouterr().out
    assert main(["math", "--data-dir", str(data_dir), "--benchmarks", "math_train", "--strict", "--out", str(tmp_path)]) == 2
    assert "train.jsonl:5530: empty answer" in capsys.readouterr().err


def test_sql_output_labels_grade_against_real_databases(data_dir, tmp_path):
    assert main(["sql", "--data-dir", str(data_dir), "--out", str(tmp_path)]) == 0
    spider = _rows(tmp_path / "spider_dev.jsonl")
    assert len(spider) == 972  # the 62 wta_1 questions have no database here
    assert not any(json.loads(r["label"])["db_id"] == "wta_1" for r in spider)
    first = spider[0]
    assert "CREATE TABLE" in first["prompt"][0]["content"] and "```sql" in first["prompt"][0]["content"]
    for row in spider[::50]:
        gold = json.loads(row["label"])["gold_sql"]
        assert grade_label(f"```sql\n{gold}\n```", row["label"]) == (1.0, "correct")
    bird = _rows(tmp_path / "bird_dev.jsonl")
    assert len(bird) == 1534 and "External knowledge" in bird[0]["prompt"][0]["content"]
    assert json.loads(bird[0]["label"])["dialect"] == "bird"


def test_user_supplied_bird_train(tmp_path):
    db_root = tmp_path / "train_databases"
    (db_root / "shop").mkdir(parents=True)
    conn = sqlite3.connect(db_root / "shop" / "shop.sqlite")
    conn.executescript("CREATE TABLE item (id INTEGER PRIMARY KEY, price REAL); INSERT INTO item VALUES (1, 2.5), (2, 4.0);")
    conn.commit()
    conn.close()
    train = tmp_path / "train.json"
    train.write_text(json.dumps([
        {"db_id": "shop", "question": "Total price?", "evidence": "price is in dollars", "SQL": "SELECT sum(price) FROM item"},
        {"db_id": "missing_db", "question": "q", "evidence": "", "SQL": "SELECT 1"},
    ]))
    data = tmp_path / "data"
    spider_db = data / "sql" / "spider" / "database"
    spider_db.mkdir(parents=True)
    (data / "sql" / "spider" / "dev.json").write_text("[]")
    (data / "sql" / "bird").mkdir(parents=True)
    (data / "sql" / "bird" / "dev.json").write_text("[]")
    out = tmp_path / "out"
    assert main(["sql", "--data-dir", str(data), "--bird-train", str(train), "--out", str(out)]) == 0
    (row,) = _rows(out / "bird_train.jsonl")
    assert "CREATE TABLE item" in row["prompt"][0]["content"] and "price is in dollars" in row["prompt"][0]["content"]
    assert grade_label("```sql\nSELECT sum(price) FROM item\n```", row["label"]) == (1.0, "correct")
    assert grade_label("```sql\nSELECT max(price) FROM item\n```", row["label"]) == (0.0, "wrong")


def test_geometry3k_output_with_images(data_dir, tmp_path):
    assert main(["geometry3k", "--data-dir", str(data_dir), "--splits", "test", "--limit", "3", "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path / "geometry3k_test.jsonl")
    assert len(rows) == 3
    image = Path(rows[0]["images"][0])
    assert image.is_absolute() and image.read_bytes()[:4] == b"\x89PNG"
    assert image.read_bytes() == (data_dir / "geometry3k" / "test" / "2401" / "img_diagram.png").read_bytes()
    assert rows[0]["prompt"][0]["content"].startswith("<image>")
    assert grade_label("\\boxed{B}", rows[0]["label"]) == (1.0, "correct")


def test_errors_and_help(tmp_path, capsys):
    assert main(["math", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "data file not found" in capsys.readouterr().err
    bad = tmp_path / "bad"
    (bad / "math_eval" / "aime24").mkdir(parents=True)
    (bad / "math_eval" / "aime24" / "test.jsonl").write_text('{"problem": "p", "answer": "1"}\n{oops\n')
    assert main(["math", "--data-dir", str(bad), "--benchmarks", "aime24", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "aime24/test.jsonl:2: invalid JSON" in err
    assert not (tmp_path / "o2" / "aime24.jsonl").exists() and not (tmp_path / "o2" / "aime24.jsonl.tmp").exists()
    for argv in (["math", "--benchmarks", "gsm8k", "--out", "x"], ["math", "--limit", "0", "--out", "x"],
                 ["math", "--prompt-style", "llama", "--out", "x"], ["sql"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2


def test_help_documents_every_option():
    import argparse

    from apmpo_openrlhf.data.__main__ import build_parser

    parser = build_parser()
    (subparsers,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(subparsers.choices) == {"math", "sql", "geometry3k", "fetch"}
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help and action.help.strip(), f"{name}: {action.option_strings} has no help"
    out = subprocess.run([sys.executable, "-m", "apmpo_openrlhf.data", "sql", "--help"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert "--bird-train-db-root" in out and "dev_tables.json" in out
