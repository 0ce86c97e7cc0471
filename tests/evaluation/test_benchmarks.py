"""The registry loads every benchmark from the real files with the prompts and labels of training."""

from __future__ import annotations

import shutil

import pytest

from apmpo_openrlhf import prompts
from evaluation.benchmarks import BENCHMARKS, LoadOptions, load_benchmark


@pytest.mark.parametrize("name, first_gold", [
    ("math500", "\\left( 3, \\frac{\\pi}{2} \\right)"), ("aime24", "204"), ("aime25", "70"), ("amc23", "27"),
    ("olympiadbench", "2"),
])
def test_math_benchmarks(data_dir, name, first_gold):
    b = load_benchmark(name, LoadOptions(data_dir=data_dir, limit=3))
    assert len(b.problems) == 3 and b.path.is_file()
    p = b.problems[0]
    assert p.gold == first_gold and p.label == {"task": "math", "answer": first_gold}
    assert p.prompt.messages[0] == {"role": "system", "content": prompts.MATH_INSTRUCTION}
    r1 = load_benchmark(name, LoadOptions(data_dir=data_dir, limit=1, prompt_style="r1")).problems[0]
    assert len(r1.prompt.messages) == 1 and r1.prompt.messages[0]["content"].endswith(prompts.MATH_INSTRUCTION)


def test_minerva_gold_is_last_boxed_and_breakdowns(data_dir):
    m = load_benchmark("minerva", LoadOptions(data_dir=data_dir, limit=2))
    assert all(p.gold and "\\boxed" not in p.gold for p in m.problems)
    assert "type" in m.problems[0].meta
    math500 = load_benchmark("math500", LoadOptions(data_dir=data_dir, limit=1)).problems[0]
    assert math500.meta == {"subject": "Precalculus", "level": 2}


def test_spider_prompt_has_schema_and_label_names_database(data_dir):
    p = load_benchmark("spider", LoadOptions(data_dir=data_dir, limit=1)).problems[0]
    text = p.prompt.messages[0]["content"]
    assert "CREATE TABLE" in text and "How many singers do we have?" in text
    assert p.label["task"] == "sql" and p.label["dialect"] == "spider" and p.label["db_id"] == "concert_singer"
    assert (data_dir / "sql" / "spider" / "database" / "concert_singer").samefile(
        f"{p.label['db_root']}/concert_singer")
    skipped = load_benchmark("spider", LoadOptions(data_dir=data_dir, skip_missing_db=True))
    assert skipped.extra_metrics["skipped_missing_db"] == {"questions": 62, "databases": ["wta_1"]}
    assert len(skipped.problems) == 1034 - 62


def test_bird_with_a_database_folder(data_dir, tmp_path):
    # BIRD's databases are not in the shared data: stand one in from Spider to exercise the path.
    dbs = tmp_path / "dev_databases" / "california_schools"
    dbs.mkdir(parents=True)
    shutil.copy(data_dir / "sql/spider/database/concert_singer/concert_singer.sqlite", dbs / "california_schools.sqlite")
    b = load_benchmark("bird", LoadOptions(data_dir=data_dir, bird_db_dir=tmp_path / "dev_databases", limit=2))
    p = b.problems[0]
    assert p.label["dialect"] == "bird" and "External knowledge:" in p.prompt.messages[0]["content"]


def test_geometry3k_records(data_dir):
    p = load_benchmark("geometry3k", LoadOptions(data_dir=data_dir, limit=1)).problems[0]
    assert p.gold == "B" and p.label == {"task": "choice", "answer": "B", "choices": ["30", "60", "120", "240"]}
    assert p.prompt.images[0].endswith("2401/img_diagram.png")


def test_benchmark_path_override(data_dir, tmp_path):
    """--benchmark-path NAME=PATH: a math file is read wherever it lies, with NAME's fields and ids."""
    from evaluation.run import _parse_paths

    lines = (data_dir / "math_eval/aime24/test.jsonl").read_text().splitlines()[:3]
    target = tmp_path / "whatever.jsonl"
    target.write_text("\n".join(lines) + "\n")
    b = load_benchmark("aime24", LoadOptions(paths=_parse_paths([f"aime24={target}"])))
    assert b.path == target
    standard = load_benchmark("aime24", LoadOptions(data_dir=data_dir, limit=3)).problems
    assert [(p.id, p.gold, p.prompt.messages) for p in b.problems] == \
        [(p.id, p.gold, p.prompt.messages) for p in standard]
    assert len(b.problems) == 3
    with pytest.raises(FileNotFoundError, match="is a folder, not a JSONL file"):
        load_benchmark("aime24", LoadOptions(paths={"aime24": tmp_path}))


def test_registry_titles_cover_the_paper_tables():
    assert [BENCHMARKS[b].title for b in BENCHMARKS] == [
        "Math500", "AIME24", "AIME25", "AMC23", "Minerva", "Olympiad", "Spider", "BIRD", "Geometry3K"]
