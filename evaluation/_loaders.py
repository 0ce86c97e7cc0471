"""Benchmark files -> Problems (prompt, grading label, gold, breakdown fields).

The records come from :mod:`apmpo_openrlhf.data.sources` and the prompts, labels and SQL schemas
are built as :mod:`apmpo_openrlhf.data.prepare` builds the training/eval prompt datasets, so a
model is evaluated on exactly the text it would be trained on.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from apmpo_openrlhf import prompts
from apmpo_openrlhf.data import sources
from apmpo_openrlhf.data.prepare import SchemaSource

from .backends.base import PromptInput
from .problems import BenchmarkSpec, LoadOptions, Problem, image_messages


def load_math(spec: BenchmarkSpec, path: Path, options: LoadOptions, extra: dict) -> list[Problem]:
    # ``path``: the standard file under the data folder, or any file given with --benchmark-path.
    problems = []
    for rec in islice(sources.load_math_file(spec.name, path), options.limit):
        meta = {k: rec["metadata"][k] for k in spec.breakdown_keys if k in rec["metadata"]}
        problems.append(Problem(
            id=rec["id"],
            prompt=PromptInput(prompts.math_messages(rec["problem"], options.prompt_style)),
            label={"task": "math", "answer": rec["answer"]},
            gold=rec["answer"],
            meta=meta,
        ))
    return problems


def load_sql(spec: BenchmarkSpec, path: Path, options: LoadOptions, extra: dict) -> list[Problem]:
    from apmpo_openrlhf.paths import data_dir

    dialect = spec.name  # "spider" | "bird": the grader's comparison rules
    if dialect == "bird":
        if options.bird_db_dir is None:
            raise FileNotFoundError(
                "BIRD dev databases not given: pass --bird-db-dir FOLDER holding <db_id>/<db_id>.sqlite "
                "(dev_databases of the BIRD release; the shared data has none)")
        db_root = Path(options.bird_db_dir).expanduser()
    else:
        db_root = Path(options.spider_db_dir).expanduser() if options.spider_db_dir else \
            data_dir(options.data_dir) / "sql" / "spider" / "database"
    if not db_root.is_dir():
        raise FileNotFoundError(f"{spec.name} database folder not found: {db_root}")
    schemas = SchemaSource(db_root, None)
    missing: dict[str, int] = {}
    problems = []
    records = sources.load_sql(path, dialect=dialect, db_root=db_root, name=f"{dialect}_dev")
    for rec in islice(records, options.limit):
        db_id = rec["db_id"]
        if schemas.db_path(db_id) is None:
            missing[db_id] = missing.get(db_id, 0) + 1
            continue
        problems.append(Problem(
            id=rec["id"],
            prompt=PromptInput(prompts.sql_messages(schemas.schema(db_id), rec["question"], rec["evidence"])),
            label={"task": "sql", "gold_sql": rec["gold_sql"], "db_id": db_id, "dialect": dialect,
                   "db_root": str(db_root.resolve())},
            gold=rec["gold_sql"],
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
    # ``path`` is the test split folder <root>/test.
    problems = []
    for rec in islice(sources.load_geometry3k(path.name, path.parent), options.limit):
        messages = image_messages(prompts.geometry_messages(rec["problem"], rec["choices"]))
        problems.append(Problem(
            id=rec["id"],
            prompt=PromptInput(messages, images=[rec["image_path"]]),
            label={"task": "choice", "answer": rec["answer"], "choices": rec["choices"]},
            gold=rec["answer"],
            meta={},
        ))
    return problems
