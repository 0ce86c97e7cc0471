"""The append-only JSONL store behind resume."""

from __future__ import annotations

import json

import pytest

from evaluation.store import JsonlStore


def _rec(pid, i, text="x"):
    return {"problem_id": pid, "sample_index": i, "response": text}


def test_append_reload_and_skip_known_keys(tmp_path):
    path = tmp_path / "s.jsonl"
    store = JsonlStore(path)
    assert store.append([_rec("a", 0), _rec("a", 1)]) == 2
    assert store.append([_rec("a", 1, "changed"), _rec("b", 0)]) == 1  # a/1 is finished: kept as is
    again = JsonlStore(path)
    assert len(again) == 3
    assert again.get(("a", 1))["response"] == "x"
    assert ("b", 0) in again and ("b", 1) not in again
    assert len(path.read_text().splitlines()) == 3


def test_line_cut_by_a_kill_is_dropped_and_truncated(tmp_path):
    path = tmp_path / "s.jsonl"
    JsonlStore(path).append([_rec("a", 0), _rec("a", 1)])
    with open(path, "a") as f:
        f.write(json.dumps(_rec("a", 2))[:15])  # a partial line, as left by SIGKILL mid-write
    store = JsonlStore(path)
    assert len(store) == 2 and ("a", 2) not in store
    store.append([_rec("a", 2)])
    lines = path.read_text().splitlines()
    assert [json.loads(line)["sample_index"] for line in lines] == [0, 1, 2]


def test_corrupt_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(_rec("a", 0)) + "\n{broken\n" + json.dumps(_rec("a", 1)) + "\n")
    with pytest.raises(ValueError, match="not valid JSON"):
        JsonlStore(path)
