"""Each bad input of ``python -m evaluation.run`` gives a message naming it (exit code 2, no traceback)."""

from __future__ import annotations

import json

import pytest

from evaluation.run import run


@pytest.fixture
def model_dir(tmp_path):
    # run() checks the model folder before loading anything: config.json is enough for these tests.
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text("{}")
    return d


def _err(capsys, argv) -> str:
    assert run(argv) == 2
    return capsys.readouterr().err


def test_missing_model_path(tmp_path, capsys):
    err = _err(capsys, ["--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--backend", "hf"])
    assert "--model" in err and "model directory not found" in err


def test_model_folder_without_config(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    err = _err(capsys, ["--model", str(tmp_path / "m"), "--out", str(tmp_path / "o")])
    assert "no config.json" in err


def test_missing_benchmark_file(model_dir, tmp_path, capsys):
    err = _err(capsys, ["--model", str(model_dir), "--out", str(tmp_path / "o"), "--benchmarks", "aime24",
                        "--data-dir", str(tmp_path / "nodata")])
    assert "aime24" in err and "not found" in err and str(tmp_path / "nodata") in err


def test_missing_benchmark_file_given_per_benchmark(model_dir, tmp_path, capsys):
    err = _err(capsys, ["--model", str(model_dir), "--out", str(tmp_path / "o"), "--benchmarks", "geometry3k",
                        "--benchmark-path", f"geometry3k={tmp_path / 'g3k' / 'test'}"])
    assert "geometry3k" in err and "not found" in err


def test_bird_without_databases(model_dir, tmp_path, capsys, data_dir):
    err = _err(capsys, ["--model", str(model_dir), "--out", str(tmp_path / "o"), "--benchmarks", "bird"])
    assert "--bird-db-dir" in err


def test_bird_database_missing_from_given_folder(model_dir, tmp_path, capsys, data_dir):
    (tmp_path / "dbs").mkdir()
    err = _err(capsys, ["--model", str(model_dir), "--out", str(tmp_path / "o"), "--benchmarks", "bird",
                        "--bird-db-dir", str(tmp_path / "dbs"), "--limit", "3"])
    assert "database files missing" in err and "california_schools" in err and "--skip-missing-db" in err


def test_spider_missing_database_of_the_shared_data(model_dir, tmp_path, capsys, data_dir):
    # wta_1 is absent from the shared data (62 questions).
    err = _err(capsys, ["--model", str(model_dir), "--out", str(tmp_path / "o"), "--benchmarks", "spider"])
    assert "wta_1 (62 questions)" in err


@pytest.mark.parametrize("flag, value, message", [
    ("--benchmarks", "math500,gsm8k", "unknown gsm8k"),
    ("--n", "0", "--n must be >= 1"),
    ("--temperature", "0", "--temperature must be > 0"),
    ("--top-p", "1.5", "--top-p must lie in (0, 1]"),
    ("--limit", "0", "--limit must be >= 1"),
    ("--benchmark-path", "math500", "NAME=PATH"),
])
def test_bad_arguments(model_dir, tmp_path, capsys, flag, value, message):
    err = _err(capsys, ["--model", str(model_dir), "--out", str(tmp_path / "o"), flag, value])
    assert message in err


def test_resume_with_other_settings_is_refused(model_dir, tmp_path, capsys, data_dir):
    out = tmp_path / "o"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"model": str(model_dir.resolve()), "backend": "hf", "n": 4,
                                              "temperature": 0.6, "top_p": 0.95, "max_tokens": 4096, "seed": 0,
                                              "prompt_style": "qwen"}))
    err = _err(capsys, ["--model", str(model_dir), "--out", str(out), "--benchmarks", "aime24", "--backend", "hf",
                        "--n", "8"])
    assert "other settings" in err and "n: 4 -> 8" in err


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        run(["--help"])
    text = capsys.readouterr().out
    for flag in ("--model", "--benchmarks", "--n", "--temperature", "--top-p", "--seed", "--out", "--limit",
                 "--backend", "--tensor-parallel-size", "--max-tokens", "--data-dir", "--bird-db-dir",
                 "--method", "--run-name", "--stop-after-chunks"):
        assert flag in text


def test_malformed_benchmark_file(model_dir, tmp_path, capsys):
    bad = tmp_path / "data" / "math_eval" / "aime24" / "test.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"id": 1, "problem": "1+1?", "answer": "2"}\n{"id": 2, "problem": \n')
    err = _err(capsys, ["--model", str(model_dir), "--out", str(tmp_path / "o"), "--benchmarks", "aime24",
                        "--data-dir", str(tmp_path / "data")])
    assert f"{bad}:2" in err and "invalid JSON" in err


def test_damaged_results_file(model_dir, tmp_path, capsys, data_dir):
    out = tmp_path / "o"
    (out / "aime24").mkdir(parents=True)
    (out / "aime24" / "generations.jsonl").write_text('{"problem_id": "a", "sample_index": 0}\n{oops\n{}\n')
    err = _err(capsys, ["--model", str(model_dir), "--out", str(out), "--benchmarks", "aime24", "--limit", "1"])
    assert "generations.jsonl" in err and "not valid JSON" in err
