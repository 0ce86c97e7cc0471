"""The downloader's plan and mechanics, offline: file:// URLs stand in for GitHub (the transfer
is urllib in both cases); the real downloads need internet and are not run here."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from apmpo_openrlhf.data import fetch, sources
from apmpo_openrlhf.data.__main__ import main


def test_plan_matches_the_loader_layout():
    dests = {d.dest for d in fetch.plan(list(fetch.GROUPS))}
    for name, (rel, _) in sources.MATH_BENCHMARKS.items():
        assert rel in dests, name
    assert "sql/spider/dev.json" in dests and "sql/bird/dev.json" in dests and "sql/bird/dev_tables.json" in dests
    assert {f"sql/spider/database/{db}/{db}.sqlite" for db in fetch.SPIDER_DEV_DBS} <= dests
    assert all(d.url.startswith("https://") for d in fetch.plan(list(fetch.GROUPS)))
    with pytest.raises(ValueError, match="unknown dataset group"):
        fetch.plan(["imagenet"])


def test_dry_run_prints_the_plan(tmp_path, capsys):
    assert main(["fetch", "--out", str(tmp_path), "--only", "bird", "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].endswith(str(tmp_path / "sql/bird/dev.json"))
    assert not any(tmp_path.iterdir())


def _file_url(path: Path) -> str:
    return path.resolve().as_uri()


def test_fetch_verifies_checksums_and_unzips(tmp_path, monkeypatch, data_dir):
    src = data_dir / "math_eval" / "aime24" / "test.jsonl"
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    archive = tmp_path / "test.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("test/1/data.json", json.dumps({"answer": "A"}))
    items = [
        fetch.Download(_file_url(src), "math_eval/aime24/test.jsonl", good),
        fetch.Download(_file_url(src), "math_eval/aime25/test.jsonl", "0" * 64),
        fetch.Download(_file_url(archive), "geometry3k/test.zip", unzip_to="geometry3k"),
        fetch.Download(_file_url(tmp_path / "absent.json"), "x/absent.json"),
    ]
    monkeypatch.setattr(fetch, "plan", lambda groups: items)
    out = tmp_path / "data"
    failures = fetch.fetch(out, ["math"])
    assert (out / "math_eval/aime24/test.jsonl").read_bytes() == src.read_bytes()
    assert not (out / "math_eval/aime25/test.jsonl").exists()
    assert (out / "geometry3k/test/1/data.json").is_file() and not (out / "geometry3k/test.zip").exists()
    assert len(failures) == 2
    assert "sha256 mismatch" in failures[0] and "absent.json" in failures[1]
    assert not [p for p in out.rglob("*") if p.is_file() and p.name.startswith(".download-")]


def test_zip_members_cannot_escape(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.txt", "x")
    with zipfile.ZipFile(buf) as zf, pytest.raises(ValueError, match="escapes"):
        fetch._safe_extract(zf, tmp_path / "target")
    assert not (tmp_path / "evil.txt").exists()
