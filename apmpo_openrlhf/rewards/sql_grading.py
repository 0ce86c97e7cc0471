"""SQL execution-accuracy reward: run the predicted and the gold query on the SQLite database and
compare results as the official evaluators do.

- Spider (test-suite ``exec_eval.result_eq``): multisets of rows, up to a permutation of columns;
  row order only when the gold query has ORDER BY.
- BIRD (``evaluation.py``): ``set(predicted rows) == set(gold rows)``.

Model output is untrusted SQL. The database is opened read-only and immutable (no journal, no
lock files: the file stays byte-identical); an authorizer allows only reads (no writes, ATTACH,
PRAGMA, transactions or schema changes); extension loading stays off; a progress handler bounds
time; at most ``max_rows`` rows are fetched; only one statement runs. sqlite releases the GIL
while executing, so grading runs in the caller's thread without blocking others.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, NamedTuple
from urllib.parse import quote

from .extraction import extract_sql
from .registry import register_reward

logger = logging.getLogger(__name__)

SQL_TIMEOUT_S = 10.0  # per query; BIRD's official evaluator allows 30 s
MAX_ROWS = 100_000
MAX_SQL_CHARS = 20_000
DIALECTS = ("spider", "bird")
DB_ROOT_ENV = "APMPO_SQL_DB_ROOT"
_DB_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")
_ORDER_BY_RE = re.compile(r"\border\s+by\b", re.IGNORECASE)

_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}
# Functions that touch the file system or extensions (only present in some builds).
_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}


class SqlExecutionError(RuntimeError):
    """The query failed: syntax error, denied action, timeout, or too many rows."""


class Grade(NamedTuple):
    score: float
    reason: str


def _authorizer(action: int, arg1: Any, arg2: Any, db_name: Any, trigger: Any) -> int:
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and str(arg2).lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _connect_readonly(db_path: Path) -> sqlite3.Connection:
    # immutable=1: sqlite neither locks nor journals nor creates -wal/-shm files.
    uri = f"file:{quote(str(db_path.resolve()))}?mode=ro&immutable=1"
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
    conn.text_factory = lambda b: b.decode("utf-8", errors="replace")
    return conn


def execute_readonly(
    db_path: str | os.PathLike,
    sql: str,
    *,
    timeout_s: float = SQL_TIMEOUT_S,
    max_rows: int = MAX_ROWS,
) -> list[tuple]:
    """Rows of one read-only query; raises SqlExecutionError for anything else."""
    path = Path(db_path)
    if not path.is_file():
        raise FileNotFoundError(f"SQLite database not found: {path}")
    if len(sql) > MAX_SQL_CHARS:
        raise SqlExecutionError(f"query longer than {MAX_SQL_CHARS} characters")
    conn = _connect_readonly(path)
    try:
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.set_authorizer(_authorizer)
        deadline = time.monotonic() + timeout_s
        conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
        try:
            cursor = conn.execute(sql)  # raises for several statements in one string
            rows = cursor.fetchmany(max_rows + 1)
        except sqlite3.OperationalError as exc:
            if time.monotonic() > deadline or "interrupted" in str(exc):
                raise SqlExecutionError(f"timeout after {timeout_s:g} s") from None
            raise SqlExecutionError(f"{type(exc).__name__}: {exc}") from None
        except (sqlite3.Error, ValueError, OverflowError) as exc:
            # ValueError: NUL characters in the query; sqlite3.Warning: several statements
            raise SqlExecutionError(f"{type(exc).__name__}: {exc}") from None
        except sqlite3.Warning as exc:
            raise SqlExecutionError(f"{type(exc).__name__}: {exc}") from None
        if len(rows) > max_rows:
            raise SqlExecutionError(f"more than {max_rows} rows")
        return rows
    finally:
        conn.close()


def _column_permutations(gold: list[tuple], pred: list[tuple], limit: int = 1000):
    """Column maps pred->gold whose per-column value sets agree (Spider test-suite constraint)."""
    ncols = len(gold[0])
    gold_sets = [{row[i] for row in gold} for i in range(ncols)]
    pred_sets = [{row[j] for row in pred} for j in range(ncols)]
    candidates = [[j for j in range(ncols) if pred_sets[j] == gold_sets[i]] for i in range(ncols)]
    count = 0
    for perm in itertools.product(*candidates):
        if len(set(perm)) != ncols:
            continue
        yield perm
        count += 1
        if count >= limit:
            return


def results_match(gold: list[tuple], pred: list[tuple], *, order_matters: bool, dialect: str) -> bool:
    """Whether ``pred`` rows equal ``gold`` rows under the dialect's official comparison."""
    if dialect == "bird":
        return set(pred) == set(gold)
    if not gold and not pred:
        return True
    if len(gold) != len(pred) or len(gold[0]) != len(pred[0]):
        return False
    gold_counts = None if order_matters else Counter(gold)
    for perm in _column_permutations(gold, pred):
        permuted = pred if perm == tuple(range(len(perm))) else [tuple(row[j] for j in perm) for row in pred]
        if order_matters:
            if permuted == gold:
                return True
        elif Counter(permuted) == gold_counts:
            return True
    return False


@functools.lru_cache(maxsize=256)
def _gold_rows(db_path: str, mtime_ns: int, gold_sql: str, timeout_s: float, max_rows: int) -> tuple:
    return tuple(execute_readonly(db_path, gold_sql, timeout_s=max(timeout_s, 30.0), max_rows=max_rows))


def grade_sql(
    response: str,
    gold_sql: str,
    db_path: str | os.PathLike,
    order_matters: bool | None = None,
    *,
    dialect: str = "spider",
    timeout_s: float = SQL_TIMEOUT_S,
    max_rows: int = MAX_ROWS,
) -> Grade:
    """(score, reason) of the SQL in ``response``; never raises for bad model output."""
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {DIALECTS}, got {dialect!r}")
    if not isinstance(response, str):
        return Grade(0.0, f"error: response must be str, got {type(response).__name__}")
    pred_sql = extract_sql(response)
    if not pred_sql:
        return Grade(0.0, "no_answer")
    path = Path(db_path)
    try:
        gold = list(_gold_rows(str(path), path.stat().st_mtime_ns, gold_sql, timeout_s, max_rows))
    except (OSError, SqlExecutionError) as exc:
        return Grade(0.0, f"error: gold query failed: {exc}"[:300])
    try:
        pred = execute_readonly(path, pred_sql, timeout_s=timeout_s, max_rows=max_rows)
    except SqlExecutionError as exc:
        reason = "timeout" if str(exc).startswith("timeout") else f"sql_error: {exc}"
        return Grade(0.0, reason[:300])
    if order_matters is None:
        order_matters = bool(_ORDER_BY_RE.search(gold_sql))
    try:
        ok = results_match(gold, pred, order_matters=order_matters, dialect=dialect)
    except TypeError as exc:  # unhashable values cannot occur in sqlite rows; defensive
        return Grade(0.0, f"error: {exc}")
    return Grade(1.0, "correct") if ok else Grade(0.0, "wrong")


def sql_reward(
    response: str,
    gold_sql: str,
    db_path: str | os.PathLike,
    order_matters: bool | None = None,
    *,
    dialect: str = "spider",
    timeout_s: float = SQL_TIMEOUT_S,
) -> float:
    """1.0 if the response's SQL (last ```sql block, else the text) gives the gold query's result."""
    return grade_sql(response, gold_sql, db_path, order_matters, dialect=dialect, timeout_s=timeout_s).score


def resolve_db_path(label: Mapping[str, Any], *, env_override: bool = True) -> Path:
    """``<root>/<db_id>/<db_id>.sqlite`` where root is $APMPO_SQL_DB_ROOT (unless
    ``env_override=False``: a caller that chose the folder itself), else the label's ``db_root``,
    else ``<data dir>/sql/<dialect>/database``."""
    db_id = label.get("db_id")
    if not isinstance(db_id, str) or not _DB_ID_RE.match(db_id):
        raise ValueError(f"sql label needs a plain 'db_id' (letters, digits, _ and -), got {db_id!r}")
    dialect = label.get("dialect", "spider")
    if dialect not in DIALECTS:
        raise ValueError(f"sql label 'dialect' must be one of {DIALECTS}, got {dialect!r}")
    root = (os.environ.get(DB_ROOT_ENV) if env_override else None) or label.get("db_root")
    if not root:
        from ..paths import data_dir

        root = data_dir() / "sql" / dialect / "database"
    return Path(root) / db_id / f"{db_id}.sqlite"


def _label_to_kwargs(label: Mapping[str, Any]) -> dict[str, Any]:
    gold_sql = label.get("gold_sql")
    if not isinstance(gold_sql, str) or not gold_sql.strip():
        raise ValueError("sql label needs a non-empty 'gold_sql' string")
    return {"gold_sql": gold_sql, "db_path": resolve_db_path(label), "dialect": label.get("dialect", "spider")}


register_reward("sql", label_to_args=_label_to_kwargs, detailed=grade_sql, timeout_arg="timeout_s")(sql_reward)
