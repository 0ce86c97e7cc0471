"""Append-only JSONL files that survive a crash: the resume mechanism of the harness.

Each benchmark keeps ``generations.jsonl`` (one line per finished generation, keyed by
problem id and sample index) and ``samples.jsonl`` (the same keys, graded). A chunk of lines is
written, flushed and fsync'ed at once, so an interruption loses at most the chunk in flight.
A line cut short by a kill is dropped (and cut off the file) when the file is next opened.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

Key = tuple[str, int]


class StoreCorruptError(ValueError):
    """A JSONL line other than the last is not valid JSON (the file was edited or damaged)."""


def sample_key(record: dict) -> Key:
    return (str(record["problem_id"]), int(record["sample_index"]))


class JsonlStore:
    """Records keyed by (problem_id, sample_index) in an append-only JSONL file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._records: dict[Key, dict] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        raw = self.path.read_bytes()
        good_end = 0
        pos = 0
        while pos < len(raw):
            nl = raw.find(b"\n", pos)
            if nl == -1:  # last line without newline: written partially before a kill
                break
            line = raw[pos:nl]
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise StoreCorruptError(f"{self.path}: line at byte {pos} is not valid JSON ({err}); "
                                     "delete the file to start this benchmark over") from err
                # A key written twice keeps its first value: rewriting never changes finished work.
                self._records.setdefault(sample_key(record), record)
            pos = nl + 1
            good_end = pos
        if good_end < len(raw):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)

    def __contains__(self, key: Key) -> bool:
        return key in self._records

    def __len__(self) -> int:
        return len(self._records)

    def get(self, key: Key) -> dict | None:
        return self._records.get(key)

    def records(self) -> Iterator[dict]:
        return iter(self._records.values())

    def append(self, records: Iterable[dict]) -> int:
        """Write the records whose keys are new; flush and fsync before returning. Returns the count."""
        new = [r for r in records if sample_key(r) not in self._records]
        if not new:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        for r in new:
            self._records[sample_key(r)] = r
        return len(new)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    """Write JSON to a temporary file and rename it over ``path`` (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
