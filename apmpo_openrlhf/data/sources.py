"""Readers of the raw benchmark files (layout of shared/data/README.md), yielding normalised records.

Used by data preparation (``python -m apmpo_openrlhf.data``) and by the evaluation harness, so
both see the same problems and gold answers. Field quirks handled here:

- minerva_math and math_train have no answer field: the answer is the last ``\\boxed{}`` of the
  solution; olympiadbench's ``final_answer`` is a list of ``$...$`` strings; amc23's answer is a
  float (27.0 -> "27"); aime25's is an int.
- Spider/BIRD records carry the database id; Geometry3K records carry the diagram path.

Every loader raises ``FileNotFoundError`` naming the missing file and ``DataFormatError`` naming
the file and line of a malformed record.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from ..paths import data_dir as default_data_dir
from ..paths import require_path
from ..rewards.extraction import last_boxed

MATH_BENCHMARKS = {
    # name: (path under the data dir, id field or None)
    "math500": ("math_eval/math500/test.jsonl", "unique_id"),
    "aime24": ("math_eval/aime24/test.jsonl", "id"),
    "aime25": ("math_eval/aime25/test.jsonl", "id"),
    "amc23": ("math_eval/amc23/test.jsonl", "id"),
    "minerva": ("math_eval/minerva_math/test.jsonl", "idx"),
    "olympiadbench": ("math_eval/olympiadbench/test.jsonl", "id"),
    "math_train": ("math_train/train.jsonl", "unique_id"),
}
MATH_EVAL_BENCHMARKS = ("math500", "aime24", "aime25", "amc23", "minerva", "olympiadbench")
GEOMETRY_SPLITS = ("train", "val", "test")
_DOLLAR_RE = re.compile(r"(?<!\\)\$")


class DataFormatError(ValueError):
    """A malformed record; the message names the file and line (or record index)."""


def _root(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir) if data_dir is not None else default_data_dir()


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; DataFormatError names file and line."""
    path = require_path(path, "JSONL file")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataFormatError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_json_list(path: str | os.PathLike, what: str) -> list[Any]:
    path = require_path(path, what)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def _field(rec: dict, key: str, where: str, types: tuple = (str,)) -> Any:
    if key not in rec:
        raise DataFormatError(f"{where}: missing field {key!r} (fields: {sorted(rec)})")
    value = rec[key]
    if not isinstance(value, types) or isinstance(value, bool):
        raise DataFormatError(f"{where}: field {key!r} must be {'/'.join(t.__name__ for t in types)}, got {value!r:.60}")
    return value


def normalise_answer(value: Any) -> str:
    """Gold answer as text: 27.0 -> "27", ["$69$", "$84$"] -> "69, 84", "$x$" -> "x"."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(normalise_answer(v) for v in value)
    return _DOLLAR_RE.sub("", str(value)).strip()


def load_math(
    name: str,
    data_dir: str | os.PathLike | None = None,
    on_bad_record: Callable[[DataFormatError], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Records ``{id, problem, answer, benchmark, metadata}`` of a math benchmark or MATH train,
    read from its standard place under the data folder (see :func:`load_math_file`)."""
    if name not in MATH_BENCHMARKS:
        raise ValueError(f"unknown math benchmark {name!r}; choose from {sorted(MATH_BENCHMARKS)}")
    rel, _ = MATH_BENCHMARKS[name]
    path = require_path(_root(data_dir) / rel, f"{name} data file", "set --data-dir or APMPO_DATA_DIR")
    yield from load_math_file(name, path, on_bad_record)


def load_math_file(
    name: str,
    path: str | os.PathLike,
    on_bad_record: Callable[[DataFormatError], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Records of the math benchmark ``name`` read from the JSONL file ``path`` (any location; the
    fields are those of ``name``'s release, e.g. ``question``/``final_answer`` for olympiadbench).

    A malformed record raises DataFormatError, or, with ``on_bad_record``, is passed to it and
    skipped (MATH train has two solutions with an empty ``\\boxed{}``: lines 5530 and 5532).
    """
    if name not in MATH_BENCHMARKS:
        raise ValueError(f"unknown math benchmark {name!r}; choose from {sorted(MATH_BENCHMARKS)}")
    _, id_field = MATH_BENCHMARKS[name]
    path = require_path(Path(path), f"{name} data file")
    if not path.is_file():
        raise FileNotFoundError(f"{name} data file: {path} is a folder, not a JSONL file")
    for lineno, rec in read_jsonl(path):
        try:
            yield _math_record(name, id_field, rec, f"{path}:{lineno}", lineno)
        except DataFormatError as exc:
            if on_bad_record is None:
                raise
            on_bad_record(exc)


def _math_record(name: str, id_field: str | None, rec: dict, where: str, lineno: int) -> dict[str, Any]:
    problem_key = "question" if name == "olympiadbench" else "problem"
    problem = _field(rec, problem_key, where).strip()
    if name in ("minerva", "math_train") and rec.get("answer") is None:
        # The original files have no answer field (other copies, e.g. Qwen2.5-Math's, do).
        solution = _field(rec, "solution", where)
        answer = last_boxed(solution)
        if answer is None:
            raise DataFormatError(f"{where}: no \\boxed{{}} answer in the solution")
    elif name == "olympiadbench":
        answer = _field(rec, "final_answer", where, (list,))
        if rec.get("context"):
            problem = f"{str(rec['context']).strip()}\n\n{problem}"
    else:
        answer = _field(rec, "answer", where, (str, int, float))
    answer = normalise_answer(answer)
    if not answer:
        raise DataFormatError(f"{where}: empty answer")
    rec_id = rec.get(id_field, lineno - 1) if id_field else lineno - 1
    metadata = {k: v for k, v in rec.items() if k not in (problem_key, "answer", "final_answer")}
    return {"id": f"{name}/{rec_id}", "problem": problem, "answer": answer, "benchmark": name, "metadata": metadata}


def spider_root(data_dir: str | os.PathLike | None = None) -> Path:
    return _root(data_dir) / "sql" / "spider"


def load_sql(
    questions_path: str | os.PathLike,
    *,
    dialect: str,
    db_root: str | os.PathLike | None = None,
    name: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Text-to-SQL records ``{id, db_id, question, evidence, gold_sql, dialect, db_path}``.

    ``questions_path``: Spider ``dev.json`` (query field ``query``) or BIRD ``dev.json`` /
    ``train.json`` (``SQL``, ``evidence``). ``db_path`` is ``<db_root>/<db_id>/<db_id>.sqlite``
    (None when ``db_root`` is None; it may not exist, e.g. BIRD databases here).
    """
    if dialect not in ("spider", "bird"):
        raise ValueError(f"dialect must be 'spider' or 'bird', got {dialect!r}")
    path = require_path(questions_path, f"{dialect} questions file")
    name = name or f"{dialect}_{path.stem}"
    sql_key = "query" if dialect == "spider" else "SQL"
    for i, rec in enumerate(read_json_list(path, f"{dialect} questions file")):
        where = f"{path}: record {i}"
        if not isinstance(rec, dict):
            raise DataFormatError(f"{where}: expected an object, got {type(rec).__name__}")
        db_id = _field(rec, "db_id", where)
        evidence = rec.get("evidence") if dialect == "bird" else None
        yield {
            "id": f"{name}/{rec.get('question_id', i)}",
            "db_id": db_id,
            "question": _field(rec, "question", where).strip(),
            "evidence": evidence.strip() if isinstance(evidence, str) and evidence.strip() else None,
            "gold_sql": _field(rec, sql_key, where).strip(),
            "dialect": dialect,
            "db_path": str(Path(db_root) / db_id / f"{db_id}.sqlite") if db_root is not None else None,
        }


def load_spider_dev(data_dir: str | os.PathLike | None = None) -> Iterator[dict[str, Any]]:
    root = spider_root(data_dir)
    return load_sql(root / "dev.json", dialect="spider", db_root=root / "database", name="spider_dev")


def load_bird_dev(
    data_dir: str | os.PathLike | None = None, db_root: str | os.PathLike | None = None
) -> Iterator[dict[str, Any]]:
    """BIRD dev questions; its databases are not in the data dir: pass ``db_root`` (dev_databases)."""
    return load_sql(_root(data_dir) / "sql" / "bird" / "dev.json", dialect="bird", db_root=db_root, name="bird_dev")


def load_geometry3k(split: str, root: str | os.PathLike | None = None) -> Iterator[dict[str, Any]]:
    """Geometry3K records ``{id, problem, choices, answer (letter), image_path}`` in InterGPS
    layout ``<root>/<split>/<id>/data.json + img_diagram.png``; ``root`` defaults to
    ``<data dir>/geometry3k``. Sorted by numeric id."""
    if split not in GEOMETRY_SPLITS:
        raise ValueError(f"split must be one of {GEOMETRY_SPLITS}, got {split!r}")
    base = Path(root) if root is not None else _root(None) / "geometry3k"
    split_dir = require_path(
        base / split, f"Geometry3K {split} split directory",
        "download it with: python -m apmpo_openrlhf.data fetch --only geometry3k --out DATA_DIR",
    )
    dirs = sorted((d for d in split_dir.iterdir() if d.is_dir()), key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name))
    if not dirs:
        raise FileNotFoundError(f"Geometry3K {split} split directory {split_dir} holds no problem folders")
    for d in dirs:
        data_path = require_path(d / "data.json", "Geometry3K data.json")
        try:
            with open(data_path, encoding="utf-8") as fh:
                rec = json.load(fh)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{data_path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
        where = str(data_path)
        choices = _field(rec, "choices", where, (list,))
        if not choices or not all(isinstance(c, str) for c in choices):
            raise DataFormatError(f"{where}: 'choices' must be a non-empty list of strings")
        answer = _field(rec, "answer", where).strip()
        if len(answer) != 1 or not ("A" <= answer <= chr(ord("A") + len(choices) - 1)):
            raise DataFormatError(f"{where}: 'answer' must be a letter indexing the {len(choices)} choices, got {answer!r}")
        image = d / "img_diagram.png"
        if not image.is_file():
            raise FileNotFoundError(f"Geometry3K diagram missing: {image}")
        yield {
            "id": f"geometry3k_{split}/{rec.get('id', d.name)}",
            "problem": _field(rec, "problem_text", where).strip(),
            "choices": [c.strip() for c in choices],
            "answer": answer,
            "image_path": str(image),
        }
