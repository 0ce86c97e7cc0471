"""Database schema text for text-to-SQL prompts: the CREATE TABLE statements.

From the SQLite file when it is present (``schema_from_sqlite``), else rebuilt from a Spider/BIRD
``tables.json`` entry (``schema_from_tables_json``), e.g. for BIRD whose databases are not here.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote

from ..paths import require_path


def schema_from_sqlite(db_path: str | os.PathLike) -> str:
    """The CREATE TABLE statements stored in the database, in file order (internal tables skipped)."""
    path = require_path(db_path, "SQLite database")
    uri = f"file:{quote(str(Path(path).resolve()))}?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True)
    try:
        rows = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND sql IS NOT NULL "
            "AND name NOT LIKE 'sqlite_%' ORDER BY rowid"
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{path}: not a readable SQLite database ({exc})") from None
    finally:
        conn.close()
    if not rows:
        raise ValueError(f"{path}: database has no tables")
    return "\n\n".join(r[0].strip().rstrip(";") + ";" for r in rows)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"' if not name.isidentifier() else name


def schema_from_tables_json(entry: Mapping[str, Any]) -> str:
    """CREATE TABLE statements rebuilt from one ``tables.json`` entry (columns, types, keys)."""
    try:
        tables = entry["table_names_original"]
        columns = entry["column_names_original"]
        types = entry["column_types"]
    except KeyError as exc:
        raise ValueError(f"tables.json entry {entry.get('db_id')!r} lacks {exc}") from None
    pk_cols: set[int] = set()
    for pk in entry.get("primary_keys", []):
        pk_cols.update(pk if isinstance(pk, list) else [pk])
    fks: dict[int, int] = {int(a): int(b) for a, b in entry.get("foreign_keys", [])}
    statements = []
    for t_idx, table in enumerate(tables):
        lines = []
        for c_idx, (owner, col) in enumerate(columns):
            if owner != t_idx:
                continue
            line = f"  {_quote_ident(col)} {types[c_idx].upper()}"
            if c_idx in pk_cols:
                line += " PRIMARY KEY"
            if c_idx in fks:
                ref_table, ref_col = tables[columns[fks[c_idx]][0]], columns[fks[c_idx]][1]
                line += f" REFERENCES {_quote_ident(ref_table)}({_quote_ident(ref_col)})"
            lines.append(line)
        statements.append(f"CREATE TABLE {_quote_ident(table)} (\n" + ",\n".join(lines) + "\n);")
    return "\n\n".join(statements)
