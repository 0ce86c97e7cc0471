"""Build OpenRLHF prompt datasets (jsonl) from the raw benchmark files.

Each output line is ``{"id", "prompt": [chat messages], "label": "<JSON text>", "datasource"}``
(+ ``"images": [absolute path]`` for Geometry3K). Train with ``--data.input_key prompt
--data.label_key label --data.apply_chat_template`` (and ``--data.image_key images``). The label
is JSON text, not an object, so that datasets with different tasks share one column type.
Output is deterministic: same inputs, same bytes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from tqdm import tqdm

from ..paths import require_path
from ..prompts import geometry_messages, math_messages, sql_messages
from . import sources
from .sql_schema import schema_from_sqlite, schema_from_tables_json

logger = logging.getLogger(__name__)


def label_json(label: dict[str, Any]) -> str:
    return json.dumps(label, ensure_ascii=False, sort_keys=True)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]], *, desc: str, total: int | None = None) -> int:
    """Write rows atomically (temp file + rename); returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in tqdm(rows, desc=desc, total=total, unit="rec", leave=False):
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def _limited(it: Iterable, limit: int | None) -> Iterator:
    for i, x in enumerate(it):
        if limit is not None and i >= limit:
            return
        yield x


def math_rows(records: Iterable[dict[str, Any]], prompt_style: str) -> Iterator[dict[str, Any]]:
    for rec in records:
        yield {
            "id": rec["id"],
            "prompt": math_messages(rec["problem"], prompt_style),
            "label": label_json({"task": "math", "answer": rec["answer"]}),
            "datasource": rec["benchmark"],
        }


def prepare_math(
    out: Path,
    benchmarks: list[str],
    *,
    data_dir: Path | None,
    prompt_style: str,
    limit: int | None,
    on_bad_record: Callable[[Exception], None] | None = None,
) -> dict[str, int]:
    counts = {}
    for name in benchmarks:
        records = _limited(sources.load_math(name, data_dir, on_bad_record), limit)
        counts[name] = write_jsonl(out / f"{name}.jsonl", math_rows(records, prompt_style), desc=name)
    return counts


class SchemaSource:
    """Schema text per db_id: from ``<db_root>/<db>/<db>.sqlite`` if present, else tables.json."""

    def __init__(self, db_root: Path | None, tables_json: Path | None):
        self.db_root = db_root
        self.tables = {}
        if tables_json is not None:
            for i, entry in enumerate(sources.read_json_list(tables_json, "tables.json")):
                if not isinstance(entry, dict) or "db_id" not in entry:
                    raise sources.DataFormatError(f"{tables_json}: record {i}: expected an object with 'db_id'")
                self.tables[entry["db_id"]] = entry
        self._cache: dict[str, str | None] = {}

    def db_path(self, db_id: str) -> Path | None:
        if self.db_root is None:
            return None
        p = self.db_root / db_id / f"{db_id}.sqlite"
        return p if p.is_file() else None

    def schema(self, db_id: str) -> str | None:
        if db_id not in self._cache:
            path = self.db_path(db_id)
            if path is not None:
                self._cache[db_id] = schema_from_sqlite(path)
            elif db_id in self.tables:
                self._cache[db_id] = schema_from_tables_json(self.tables[db_id])
            else:
                self._cache[db_id] = None
        return self._cache[db_id]


def sql_rows(
    records: Iterable[dict[str, Any]],
    schemas: SchemaSource,
    datasource: str,
    *,
    require_db: bool,
    skipped: dict[str, int],
) -> Iterator[dict[str, Any]]:
    """Prompt rows; a question whose database (``require_db``) or schema is missing is skipped
    and counted in ``skipped[db_id]``."""
    for rec in records:
        db_id = rec["db_id"]
        schema = schemas.schema(db_id)
        if schema is None or (require_db and schemas.db_path(db_id) is None):
            skipped[db_id] = skipped.get(db_id, 0) + 1
            continue
        label = {"task": "sql", "gold_sql": rec["gold_sql"], "db_id": db_id, "dialect": rec["dialect"]}
        if schemas.db_root is not None:
            label["db_root"] = str(schemas.db_root.resolve())
        yield {
            "id": rec["id"],
            "prompt": sql_messages(schema, rec["question"], rec["evidence"]),
            "label": label_json(label),
            "datasource": datasource,
        }


def prepare_sql(
    out: Path,
    *,
    data_dir: Path | None,
    bird_train: Path | None,
    bird_train_db_root: Path | None,
    bird_dev_db_root: Path | None,
    limit: int | None,
) -> dict[str, Any]:
    """spider_dev.jsonl (questions whose database is present), bird_dev.jsonl (schema from the
    databases if given, else dev_tables.json), bird_train.jsonl (if ``bird_train`` given)."""
    root = Path(data_dir) if data_dir is not None else None
    report: dict[str, Any] = {}
    spider = sources.spider_root(root)
    spider_schemas = SchemaSource(require_path(spider / "database", "Spider database directory"), None)
    skipped: dict[str, int] = {}
    report["spider_dev"] = write_jsonl(
        out / "spider_dev.jsonl",
        sql_rows(_limited(sources.load_spider_dev(root), limit), spider_schemas, "spider_dev", require_db=True, skipped=skipped),
        desc="spider_dev",
    )
    report["spider_dev_skipped"] = skipped

    bird_dir = (root if root is not None else sources.default_data_dir()) / "sql" / "bird"
    tables = bird_dir / "dev_tables.json"
    bird_schemas = SchemaSource(bird_dev_db_root, tables if tables.is_file() else None)
    skipped = {}
    report["bird_dev"] = write_jsonl(
        out / "bird_dev.jsonl",
        sql_rows(_limited(sources.load_bird_dev(root, bird_dev_db_root), limit), bird_schemas, "bird_dev", require_db=False, skipped=skipped),
        desc="bird_dev",
    )
    report["bird_dev_skipped"] = skipped
    if bird_train is not None:
        bird_train = require_path(bird_train, "BIRD train questions file (train.json)")
        db_root = bird_train_db_root or bird_train.parent / "train_databases"
        require_path(db_root, "BIRD train database directory", "pass --bird-train-db-root")
        tables_json = bird_train.parent / "train_tables.json"
        train_schemas = SchemaSource(db_root, tables_json if tables_json.is_file() else None)
        skipped = {}
        records = sources.load_sql(bird_train, dialect="bird", db_root=db_root, name="bird_train")
        report["bird_train"] = write_jsonl(
            out / "bird_train.jsonl",
            sql_rows(_limited(records, limit), train_schemas, "bird_train", require_db=True, skipped=skipped),
            desc="bird_train",
        )
        report["bird_train_skipped"] = skipped
    return report


def geometry_rows(records: Iterable[dict[str, Any]], image_dir: Path, datasource: str) -> Iterator[dict[str, Any]]:
    """Rows with the diagram copied to ``image_dir/<id>.png`` (absolute path in ``images``)."""
    image_dir.mkdir(parents=True, exist_ok=True)
    for rec in records:
        local_id = rec["id"].split("/", 1)[1]
        image = image_dir / f"{local_id}.png"
        if not image.is_file() or image.stat().st_size != Path(rec["image_path"]).stat().st_size:
            shutil.copyfile(rec["image_path"], image)
        yield {
            "id": rec["id"],
            "prompt": geometry_messages(rec["problem"], rec["choices"]),
            "label": label_json({"task": "choice", "answer": rec["answer"], "choices": rec["choices"]}),
            "datasource": datasource,
            "images": [str(image.resolve())],
        }


def prepare_geometry3k(out: Path, splits: list[str], *, root: Path | None, limit: int | None) -> dict[str, int]:
    counts = {}
    for split in splits:
        name = f"geometry3k_{split}"
        records = _limited(sources.load_geometry3k(split, root), limit)
        counts[name] = write_jsonl(out / f"{name}.jsonl", geometry_rows(records, out / "images" / split, name), desc=name)
    return counts
