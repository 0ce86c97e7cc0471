"""Benchmark file -> Problems (prompt, grading label, gold, breakdown fields)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from apmpo_openrlhf import prompts

from .backends.base import PromptInput
from .problems import BenchmarkSpec, LoadOptions, Problem, image_messages


def _read_jsonl(path: Path, limit: int | None) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err})") from None
            if limit is not None and len(rows) >= limit:
                break
    return rows


def _field(row: dict, name: str, path: Path, index: int):
    if name not in row:
        raise ValueError(f"{path}: record {index} has no {name!r} field")
    return row[name]


def load_math(spec: BenchmarkSpec, path: Path, options: LoadOptions, extra: dict) -> list[Problem]:
    from apmpo_openrlhf.rewards.extraction import last_boxed

    problems = []
    for i, row in enumerate(_read_jsonl(path, options.limit)):
        text = row.get("problem", row.get("question"))
        if spec.name == "olympiadbench":
            text = _field(row, "question", path, i)
            gold = _field(row, "final_answer", path, i)
        elif spec.name == "minerva":
            gold = last_boxed(_field(row, "solution", path, i))
            if gold is None:
                raise ValueError(f"{path}: record {i} has no \\boxed{{}} answer in its solution")
        else:
            gold = _field(row, "answer", path, i)
        pid = row.get("unique_id", row.get("id", row.get("idx", i)))
        meta = {k: row[k] for k in spec.breakdown_keys if k in row}
        problems.append(Problem(
            id=str(pid),
            prompt=PromptInput(prompts.math_messages(text, options.prompt_style)),
            label={"task": "math", "answer": gold},
            gold=gold,
            meta=meta,
        ))
    return problems


def sqlite_schema(db_path: Path) -> str:
    """The CREATE TABLE statements of a SQLite database (opened read-only)."""
    import sqlite3
    from urllib.parse import quote

    conn = sqlite3.connect(f"file:{quote(str(db_path.resolve()))}?mode=ro&immutable=1", uri=True)
    try:
        rows = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type='table' AND sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "ORDER BY rowid").fetchall()
    finally:
        conn.close()
    return "\n\n".join(r[0].strip() + ";" for r in rows)


def load_sql(spec: BenchmarkSpec, path: Path, options: LoadOptions, extra: dict) -> list[Problem]:
    from apmpo_openrlhf.paths import data_dir

    dialect = spec.name  # "spider" | "bird": the grader's comparison rules
    if dialect == "bird":
        if options.bird_db_dir is None:
            raise FileNotFoundError(
                "BIRD dev databases not given: pass --bird-db-dir FOLDER holding <db_id>/<db_id>.sqlite "
                "(download dev_databases from the BIRD benchmark site; the shared data has none)")
        db_root = Path(options.bird_db_dir).expanduser()
    else:
        db_root = Path(options.spider_db_dir).expanduser() if options.spider_db_dir else \
            data_dir(options.data_dir) / "sql" / "spider" / "database"
    if not db_root.is_dir():
        raise FileNotFoundError(f"{spec.name} database folder not found: {db_root}")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    gold_field = "query" if dialect == "spider" else "SQL"
    missing: dict[str, int] = {}
    schemas: dict[str, str] = {}
    problems = []
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of questions")
    for i, row in enumerate(rows[: options.limit]):
        db_id = _field(row, "db_id", path, i)
        db_path = db_root / db_id / f"{db_id}.sqlite"
        if not db_path.is_file():
            missing[db_id] = missing.get(db_id, 0) + 1
            continue
        if db_id not in schemas:
            schemas[db_id] = sqlite_schema(db_path)
        gold_sql = _field(row, gold_field, path, i)
        messages = prompts.sql_messages(schemas[db_id], _field(row, "question", path, i), row.get("evidence"))
        problems.append(Problem(
            id=str(row.get("question_id", i)),
            prompt=PromptInput(messages),
            label={"task": "sql", "gold_sql": gold_sql, "db_id": db_id, "db_root": str(db_root), "dialect": dialect},
            gold=gold_sql,
            meta={"db_id": db_id},
        ))
    if missing:
        listing = ", ".join(f"{db} ({n} questions)" for db, n in sorted(missing.items()))
        if not options.skip_missing_db:
            raise FileNotFoundError(
                f"{spec.name}: database files missing under {db_root}: {listing}; "
                "add them, or pass --skip-missing-db to evaluate the other questions")
        extra["skipped_missing_db"] = {"questions": sum(missing.values()), "databases": sorted(missing)}
    return problems


def load_geometry3k(spec: BenchmarkSpec, path: Path, options: LoadOptions, extra: dict) -> list[Problem]:
    folders = sorted((p for p in path.iterdir() if p.is_dir() and (p / "data.json").is_file()),
                     key=lambda p: (len(p.name), p.name))
    if not folders:
        raise FileNotFoundError(f"geometry3k: no <id>/data.json folders under {path}")
    problems = []
    for folder in folders[: options.limit]:
        row = json.loads((folder / "data.json").read_text(encoding="utf-8"))
        image = folder / "img_diagram.png"
        if not image.is_file():
            raise FileNotFoundError(f"geometry3k: diagram image missing: {image}")
        choices = [str(c) for c in _field(row, "choices", folder, 0)]
        answer = _field(row, "answer", folder, 0)
        messages = image_messages(prompts.geometry_messages(_field(row, "problem_text", folder, 0), choices))
        goal = row.get("problem_type_goal")
        problems.append(Problem(
            id=str(row.get("id", folder.name)),
            prompt=PromptInput(messages, images=[str(image)]),
            label={"task": "choice", "answer": answer, "choices": choices},
            gold=answer,
            meta={"problem_type_goal": goal[0]} if isinstance(goal, list) and goal else {},
        ))
    return problems
