"""Report layout from synthetic result folders: Table 1 / Table 5 columns, mean±std over seeds."""

from __future__ import annotations

import csv
import io
import json
import random
import statistics

import pytest

from evaluation import report

MATH = ("math500", "aime24", "aime25", "amc23", "minerva", "olympiadbench")


def write_run(root, name, model, method, seed, values: dict[str, tuple[float, float | None]], limit=None,
              train_name=None):
    d = root / name
    d.mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"model": f"/models/{model}", "model_name": model, "method": method,
                                            "train_seed": seed, "run_name": name, "train_name": train_name}))
    for bench, (p1, p16) in values.items():
        (d / bench).mkdir()
        metrics = {"pass@1": p1, "num_problems": 30, "n_samples": 16}
        if p16 is not None:
            metrics["pass@16"] = p16
        (d / bench / "metrics.json").write_text(json.dumps({"benchmark": bench, "metrics": metrics,
                                                             "settings": {"limit": limit}}))
    return d


@pytest.fixture
def results(tmp_path):
    rng = random.Random(11)
    truth = {}
    for method, seeds in (("base", [None]), ("grpo", [0, 1, 2]), ("apmpo", [0, 1, 2])):
        for seed in seeds:
            vals = {b: (rng.random(), rng.random() if b in ("aime24", "aime25", "amc23") else None) for b in MATH}
            vals.update({b: (rng.random(), None) for b in ("geometry3k", "spider")})
            name = f"{method}-s{seed}"
            write_run(tmp_path, name, "Qwen2.5-Math-1.5B-Instruct", method, seed, vals)
            truth[(method, seed)] = vals
    return tmp_path, truth


def _expected(truth, method, fn):
    vals = [fn(v) for (m, _), v in truth.items() if m == method]
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def test_markdown_table1_layout_and_mean_std(results, capsys):
    root, truth = results
    assert report.main([str(root), "--format", "md"]) == 0
    out = capsys.readouterr().out
    header = ("| Method | Math500 | AIME24 (P@1 / P@16) | AIME25 (P@1 / P@16) | AMC23 (P@1 / P@16) | Minerva | "
              "Olympiad | Avg. (P@1 / P@16) |")
    assert header in out
    assert "| Method | Geometry3K | Spider | BIRD |" in out
    mean, std = _expected(truth, "apmpo", lambda v: 100 * v["math500"][0])
    m16, s16 = _expected(truth, "apmpo", lambda v: 100 * v["aime24"][1])
    m1, s1 = _expected(truth, "apmpo", lambda v: 100 * v["aime24"][0])
    avg1, avgs1 = _expected(truth, "apmpo", lambda v: 100 * statistics.fmean(v[b][0] for b in MATH))
    avg16, avgs16 = _expected(truth, "apmpo",
                              lambda v: 100 * statistics.fmean(v[b][1] for b in ("aime24", "aime25", "amc23")))
    row = next(line for line in out.splitlines() if line.startswith("| APMPO (n=3) |") and "/" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == f"{mean:.1f}±{std:.1f}"
    assert cells[2] == f"{m1:.1f}±{s1:.1f} / {m16:.1f}±{s16:.1f}"
    assert cells[7] == f"{avg1:.1f}±{avgs1:.1f} / {avg16:.1f}±{avgs16:.1f}"
    # base: one run, no ±; BIRD never evaluated: a dash
    base = next(line for line in out.splitlines() if line.startswith("| Base |") and "/" in line)
    assert "±" not in base
    t5 = next(line for line in out.splitlines() if line.startswith("| GRPO (n=3) |") and "/" not in line)
    assert t5.rstrip().endswith("| – |")
    # method order as in the paper and per-run rows present
    order = [line.split("|")[1].strip().split(" ")[0] for line in out.split("### Table 5")[0].splitlines()
             if line.startswith("| ") and ("(n=" in line or line.startswith("| Base |"))]
    assert order[:3] == ["Base", "GRPO", "APMPO"]
    assert "APMPO seed=2 (apmpo-s2)" in out


def test_csv_and_json_columns(results, capsys):
    root, truth = results
    assert report.main([str(root), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    cols = {r["column"] for r in rows if r["table"] == "table1"}
    assert cols == {"math500_pass@1", "aime24_pass@1", "aime24_pass@16", "aime25_pass@1", "aime25_pass@16",
                    "amc23_pass@1", "amc23_pass@16", "minerva_pass@1", "olympiadbench_pass@1", "avg_pass@1",
                    "avg_pass@16"}
    grpo_spider = next(r for r in rows if r["kind"] == "mean" and r["method"] == "grpo" and r["column"] == "spider_pass@1")
    mean, std = _expected(truth, "grpo", lambda v: 100 * v["spider"][0])
    assert float(grpo_spider["mean"]) == pytest.approx(mean, abs=1e-4)
    assert float(grpo_spider["std"]) == pytest.approx(std, abs=1e-4)
    assert report.main([str(root), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["columns"]["table5"] == ["geometry3k_pass@1", "spider_pass@1", "bird_pass@1"]
    runs = [r for r in data["tables"]["table1"] if r["kind"] == "run"]
    assert len(runs) == 7


def test_missing_benchmark_leaves_average_empty_and_subset_is_noted(tmp_path, capsys):
    write_run(tmp_path, "a", "M", "dapo", 0, {"math500": (0.5, None)}, limit=10)
    assert report.main([str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| DAPO |"))
    assert row.split("|")[2].strip() == "50.0"
    assert row.rstrip().endswith("– / – |")
    assert "--limit" in out and "math500: 10" in out
    assert "Table 5" not in out


def test_report_errors(tmp_path, capsys):
    assert report.main([str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert report.main([str(tmp_path / "empty")]) == 2
    assert "no run.json" in capsys.readouterr().err


def test_ablation_runs_are_not_averaged_with_the_plain_method(tmp_path, capsys):
    """Runs of one method from different training configs (the config's `name`, e.g. an ablation that
    keeps algorithm.loss=apmpo) get their own mean row, labelled with that name; seeds still pool."""
    plain, ablation = "math-m-apmpo", "ablation-table7_fss-m-fss_mu"
    for seed, v in ((0, 0.2), (1, 0.4)):
        write_run(tmp_path, f"apmpo-s{seed}", "M", "apmpo", seed, {"math500": (v, None)}, train_name=plain)
        write_run(tmp_path, f"fss_mu-s{seed}", "M", "apmpo", seed, {"math500": (v + 0.5, None)}, train_name=ablation)
    write_run(tmp_path, "grpo-s0", "M", "grpo", 0, {"math500": (0.1, None)}, train_name="math-m-grpo")
    assert report.main([str(tmp_path), "--format", "md"]) == 0
    out = capsys.readouterr().out
    cells = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in out.splitlines()
             if line.startswith("| ") and "(n=" in line}
    assert cells[f"APMPO [{ablation}] (n=2)"] == f"{statistics.fmean([70, 90]):.1f}±{statistics.stdev([70, 90]):.1f}"
    assert cells[f"APMPO [{plain}] (n=2)"] == f"{statistics.fmean([20, 40]):.1f}±{statistics.stdev([20, 40]):.1f}"
    assert "| GRPO |" in out  # a single training config per method: no name in the label
    assert f"APMPO [{ablation}] seed=1 (fss_mu-s1)" in out
    assert report.main([str(tmp_path), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    means = {r["train_name"]: float(r["mean"]) for r in rows if r["kind"] == "mean"}
    assert means == {plain: pytest.approx(30.0), ablation: pytest.approx(80.0), "math-m-grpo": pytest.approx(10.0)}


def test_every_registered_baseline_has_a_title_and_a_place_after_table1s_methods():
    from apmpo_openrlhf.algorithms.registry import POLICY_LOSSES

    for name in POLICY_LOSSES:
        assert name in report.METHOD_ORDER, f"{name} is registered but has no place in the report's row order"
    assert [report.method_title(m) for m in ("base", "grpo", "gspo", "drgrpo", "cispo", "my_run")] == \
        ["Base", "GRPO", "GSPO", "Dr. GRPO", "CISPO", "my_run"]
    ordered = sorted(["cispo", "apmpo", "my_run", "drgrpo", "base", "gspo", "grpo"], key=report._method_key)
    assert ordered == ["base", "grpo", "apmpo", "gspo", "drgrpo", "cispo", "my_run"]
