"""Benchmark loaders on the real files, and clear errors on missing or malformed input."""

from __future__ import annotations

import json

import pytest

from apmpo_openrlhf.data import sources
from apmpo_openrlhf.data.sources import DataFormatError, load_geometry3k, load_math, load_spider_dev, load_sql
from apmpo_openrlhf.data.sql_schema import schema_from_sqlite, schema_from_tables_json

EXPECTED = {"math500": 500, "aime24": 30, "aime25": 30, "amc23": 40, "minerva": 272, "olympiadbench": 675}


def test_math_benchmarks_load_with_normalised_answers(data_dir):
    loaded = {name: list(load_math(name, data_dir)) for name in EXPECTED}
    assert {k: len(v) for k, v in loaded.items()} == EXPECTED
    for name, recs in loaded.items():
        assert len({r["id"] for r in recs}) == len(recs), f"{name} ids are not unique"
        assert all(r["problem"] and r["answer"] and r["benchmark"] == name for r in recs)
    assert loaded["amc23"][0]["answer"] == "27"  # 27.0 in the file
    assert loaded["aime25"][0]["answer"] == "70"  # an int in the file
    assert all("$" not in r["answer"] for r in loaded["olympiadbench"])
    multi = [r for r in loaded["olympiadbench"] if r["metadata"]["is_multiple_answer"]]
    assert any(r["answer"] == "69,84" for r in multi)
    assert loaded["minerva"][0]["answer"] == sources.last_boxed(loaded["minerva"][0]["metadata"]["solution"])
    assert loaded["math500"][0]["id"] == "math500/test/precalculus/807.json"


def test_math_train_answers_from_solutions(data_dir):
    bad = []
    recs = list(load_math("math_train", data_dir, on_bad_record=bad.append))
    assert len(recs) == 7498
    assert [str(e).rsplit(":", 2)[-2] for e in bad] == ["5530", "5532"]
    with pytest.raises(DataFormatError, match=r"train.jsonl:5530: empty answer"):
        list(load_math("math_train", data_dir))


def test_math_file_anywhere_reads_like_the_standard_place(data_dir, tmp_path):
    lines = (data_dir / "math_eval/olympiadbench/test.jsonl").read_text().splitlines()[:4]
    lines.insert(2, json.dumps({"question": "Q", "final_answer": []}))  # no answer
    path = tmp_path / "any_name.jsonl"
    path.write_text("\n".join(lines) + "\n")
    bad = []
    recs = list(sources.load_math_file("olympiadbench", path, on_bad_record=bad.append))
    assert recs == list(load_math("olympiadbench", data_dir))[:4]
    assert len(bad) == 1 and f"{path}:3: empty answer" in str(bad[0])
    with pytest.raises(DataFormatError, match="any_name.jsonl:3"):
        list(sources.load_math_file("olympiadbench", path))
    with pytest.raises(ValueError, match="unknown math benchmark 'aime'"):
        list(sources.load_math_file("aime", path))
    with pytest.raises(FileNotFoundError, match="olympiadbench data file not found"):
        list(sources.load_math_file("olympiadbench", tmp_path / "missing.jsonl"))


def test_sql_and_geometry_loaders(data_dir):
    spider = list(load_spider_dev(data_dir))
    assert len(spider) == 1034 and spider[0]["gold_sql"] == "SELECT count(*) FROM singer"
    bird = list(sources.load_bird_dev(data_dir))
    assert len(bird) == 1534 and bird[0]["evidence"] and bird[0]["db_path"] is None
    g3k = list(load_geometry3k("test", data_dir / "geometry3k"))
    assert len(g3k) == 601 and g3k[0]["id"] == "geometry3k_test/2401" and g3k[0]["answer"] == "B"


def test_schema_text(data_dir):
    schema = schema_from_sqlite(data_dir / "sql/spider/database/concert_singer/concert_singer.sqlite")
    assert schema.count("CREATE TABLE") == 4 and '"singer"' in schema
    tables = json.loads((data_dir / "sql/bird/dev_tables.json").read_text())
    rebuilt = schema_from_tables_json(tables[0])
    assert rebuilt.count("CREATE TABLE") == len(tables[0]["table_names_original"])
    assert "PRIMARY KEY" in rebuilt and "REFERENCES" in rebuilt


def _layout(tmp_path, name: str, lines: list[str]):
    rel, _ = sources.MATH_BENCHMARKS[name]
    path = tmp_path / rel
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_malformed_records_name_file_and_line(tmp_path):
    path = _layout(tmp_path, "aime24", ['{"problem": "p", "answer": "1", "id": 1}', "{not json", ""])
    with pytest.raises(DataFormatError, match=rf"{path}:2: invalid JSON"):
        list(load_math("aime24", tmp_path))
    path.write_text('{"problem": "p", "answer": "1"}\n{"problem": "q"}\n')
    with pytest.raises(DataFormatError, match=rf"{path}:2: missing field 'answer'"):
        list(load_math("aime24", tmp_path))
    path.write_text('{"problem": 5, "answer": "1"}\n')
    with pytest.raises(DataFormatError, match=rf"{path}:1: field 'problem' must be str"):
        list(load_math("aime24", tmp_path))
    path.write_text('[1, 2]\n')
    with pytest.raises(DataFormatError, match=rf"{path}:1: expected a JSON object"):
        list(load_math("aime24", tmp_path))


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"math500 data file not found: .*math_eval/math500/test.jsonl"):
        list(load_math("math500", tmp_path))
    with pytest.raises(FileNotFoundError, match="Geometry3K train split directory not found"):
        list(load_geometry3k("train", tmp_path))
    with pytest.raises(ValueError, match="unknown math benchmark"):
        list(load_math("gsm8k", tmp_path))
    bad = tmp_path / "dev.json"
    bad.write_text('[{"db_id": "x", "question": "q"}]')
    with pytest.raises(DataFormatError, match=rf"{bad}: record 0: missing field 'query'"):
        list(load_sql(bad, dialect="spider"))


def test_geometry_record_checks(tmp_path):
    d = tmp_path / "test" / "1"
    d.mkdir(parents=True)
    (d / "data.json").write_text(json.dumps({"problem_text": "Find x.", "choices": ["1", "2"], "answer": "C", "id": 1}))
    (d / "img_diagram.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(DataFormatError, match="'answer' must be a letter indexing the 2 choices"):
        list(load_geometry3k("test", tmp_path))


def test_math_train_answer_field_or_boxed(tmp_path):
    _layout(tmp_path, "math_train", [
        json.dumps({"problem": "p1", "solution": "so $\\boxed{\\frac{1}{2}}$.", "unique_id": "a"}),
        json.dumps({"problem": "p2", "solution": "no box here", "answer": "3", "unique_id": "b"}),
    ])
    recs = list(load_math("math_train", tmp_path))
    assert [r["answer"] for r in recs] == ["\\frac{1}{2}", "3"]
    assert [r["id"] for r in recs] == ["math_train/a", "math_train/b"]
