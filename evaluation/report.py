"""``python -m evaluation.report RUN_DIR ... --format md|csv|json``: the paper's Table 1 and Table 5.

A run is one ``--out`` folder of ``python -m evaluation.run`` (its run.json says model, method and
training seed). Rows: each run, and per (model, method, training run name, checkpoint step) the mean
and sample standard deviation (ddof=1) over its runs (the paper's 3 training seeds); the training run
name (the config's ``name``) keeps an ablation apart from the plain method and is shown when one
model and method have several. Values are percentages.
Table 1: Math500, AIME24/AIME25/AMC23 (Pass@1 and Pass@16), Minerva, Olympiad, Avg Pass@1 (over the
six) / Avg Pass@16 (over AIME24, AIME25, AMC23). Table 5: Geometry3K, Spider, BIRD (Pass@1).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .benchmarks import BENCHMARKS, MATH_BENCHMARKS

PASS16_BENCHMARKS = ("aime24", "aime25", "amc23")
TABLE5_BENCHMARKS = ("geometry3k", "spider", "bird")
# Table 1's methods first, then the further baselines of the loss registry (algorithms/registry.py).
METHOD_ORDER = ("base", "grpo", "dapo", "gmpo", "apmpo", "gspo", "drgrpo", "cispo")
METHOD_TITLES = {"base": "Base", "drgrpo": "Dr. GRPO"}


@dataclass(frozen=True)
class Column:
    key: str  # column id in csv/json
    title: str  # header text
    benchmark: str | None  # None for averages
    metric: str  # "pass@1" or "pass@16"


def _table1_columns() -> list[Column]:
    cols = []
    for b in MATH_BENCHMARKS:
        cols.append(Column(f"{b}_pass@1", f"{BENCHMARKS[b].title} P@1", b, "pass@1"))
        if b in PASS16_BENCHMARKS:
            cols.append(Column(f"{b}_pass@16", f"{BENCHMARKS[b].title} P@16", b, "pass@16"))
    cols.append(Column("avg_pass@1", "Avg. P@1", None, "pass@1"))
    cols.append(Column("avg_pass@16", "Avg. P@16", None, "pass@16"))
    return cols


TABLES = {
    "table1": ("Table 1: math reasoning (Pass@1 / Pass@16, %)", _table1_columns()),
    "table5": ("Table 5: multimodal and SQL (Pass@1, %)",
               [Column(f"{b}_pass@1", BENCHMARKS[b].title, b, "pass@1") for b in TABLE5_BENCHMARKS]),
}


@dataclass
class Run:
    path: Path
    model: str
    method: str
    train_seed: int | None
    run_name: str
    step: int | None = None
    train_name: str | None = None  # the training config's `name` (e.g. an ablation); None when unknown
    metrics: dict[str, dict] = field(default_factory=dict)  # benchmark -> metrics
    limits: dict[str, int | None] = field(default_factory=dict)

    def value(self, col: Column) -> float | None:
        """Percent value of a column for this run (None when not evaluated)."""
        if col.benchmark is not None:
            m = self.metrics.get(col.benchmark, {})
            return 100.0 * m[col.metric] if col.metric in m else None
        members = MATH_BENCHMARKS if col.metric == "pass@1" else PASS16_BENCHMARKS
        vals = [self.value(Column("", "", b, col.metric)) for b in members]
        return None if any(v is None for v in vals) else sum(vals) / len(vals)


class ReportError(Exception):
    pass


def find_runs(paths: list[str]) -> list[Path]:
    """Run folders (holding run.json) among ``paths`` and, for a folder without one, its subfolders."""
    found = []
    for p in map(Path, paths):
        if (p / "run.json").is_file():
            found.append(p)
        elif p.is_dir():
            subs = sorted(d for d in p.iterdir() if (d / "run.json").is_file())
            if not subs:
                raise ReportError(f"{p}: no run.json in it or in its subfolders (not an evaluation.run --out folder)")
            found.extend(subs)
        else:
            raise ReportError(f"{p}: not found")
    return found


def load_run(path: Path) -> Run:
    info = json.loads((path / "run.json").read_text())
    run = Run(path, info.get("model_name") or Path(info.get("model", path.name)).name, info.get("method") or "base",
              info.get("train_seed"), info.get("run_name") or path.name, info.get("checkpoint_step"),
              info.get("train_name"))
    for bdir in sorted(path.iterdir()):
        mfile = bdir / "metrics.json"
        if mfile.is_file():
            data = json.loads(mfile.read_text())
            run.metrics[data["benchmark"]] = data["metrics"]
            run.limits[data["benchmark"]] = data.get("settings", {}).get("limit")
    return run


def _method_key(method: str):
    m = method.lower()
    return (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m)


def method_title(method: str) -> str:
    if method.lower() in METHOD_TITLES:
        return METHOD_TITLES[method.lower()]
    return method.upper() if method.lower() in METHOD_ORDER else method


def _seed_key(run: Run):
    return (run.train_seed is None, run.train_seed if run.train_seed is not None else 0, run.run_name)


def build_rows(runs: list[Run], columns: list[Column]) -> list[dict]:
    """Aggregated rows (kind 'mean') followed by each group's runs (kind 'run'), grouped by model.

    A group is (model, method, training run name, step): the seeds of one training config. The
    training run name is part of the label only where one (model, method) has several of them."""
    groups: dict[tuple[str, str, str | None, int | None], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.model, r.method, r.train_name, r.step), []).append(r)
    names_per_method: dict[tuple[str, str], set] = {}
    for mo, m, n, _ in groups:
        names_per_method.setdefault((mo, m), set()).add(n)
    rows = []
    models = list(dict.fromkeys(r.model for r in runs))
    for model in models:
        keys = sorted(((m, n, s) for (mo, m, n, s) in groups if mo == model),
                      key=lambda k: (_method_key(k[0]), k[1] is not None, k[1] or "", k[2] is None, k[2] or 0))
        for method, train_name, step in keys:
            members = sorted(groups[(model, method, train_name, step)], key=_seed_key)
            variant = train_name if len(names_per_method[(model, method)]) > 1 else None
            common = {"model": model, "method": method, "train_name": train_name, "variant": variant, "step": step}
            agg = {"kind": "mean", **common, "n_runs": len(members),
                   "train_seeds": [r.train_seed for r in members], "values": {}}
            for col in columns:
                vals = [v for r in members if (v := r.value(col)) is not None]
                if vals:
                    std = statistics.stdev(vals) if len(vals) > 1 else None
                    agg["values"][col.key] = {"mean": statistics.fmean(vals), "std": std, "n": len(vals)}
            rows.append(agg)
            for r in members:
                rows.append({"kind": "run", **common, "train_seed": r.train_seed,
                             "run_name": r.run_name, "path": str(r.path),
                             "values": {c.key: {"mean": v, "std": None, "n": 1}
                                        for c in columns if (v := r.value(c)) is not None}})
    return rows


def fmt_cell(cell: dict | None) -> str:
    if cell is None:
        return "–"
    if cell["std"] is None:
        return f"{cell['mean']:.1f}"
    return f"{cell['mean']:.1f}±{cell['std']:.1f}"


def _md_cells(row: dict, columns: list[Column]) -> list[str]:
    """Cells in the paper's layout: Pass@1 / Pass@16 pairs share one cell."""
    cells = []
    i = 0
    while i < len(columns):
        col = columns[i]
        text = fmt_cell(row["values"].get(col.key))
        if i + 1 < len(columns) and columns[i + 1].metric == "pass@16" and columns[i + 1].benchmark == col.benchmark:
            text += " / " + fmt_cell(row["values"].get(columns[i + 1].key))
            i += 1
        cells.append(text)
        i += 1
    return cells


def _md_headers(columns: list[Column]) -> list[str]:
    heads = []
    i = 0
    while i < len(columns):
        col = columns[i]
        if i + 1 < len(columns) and columns[i + 1].metric == "pass@16" and columns[i + 1].benchmark == col.benchmark:
            heads.append(col.title.replace(" P@1", "") + " (P@1 / P@16)")
            i += 2
            continue
        heads.append(col.title.replace(" P@1", ""))
        i += 1
    return heads


def _md_pairs(columns: list[Column]) -> list[Column]:
    # treat the two averages as a pair in the cell builder
    return [Column(c.key, c.title, "__avg__" if c.benchmark is None else c.benchmark, c.metric) for c in columns]


def render_md(tables: dict[str, list[dict]], limited: list[str]) -> str:
    out = []
    for name, rows in tables.items():
        title, columns = TABLES[name]
        pcols = _md_pairs(columns)
        heads = ["Method", *_md_headers(columns)]
        for kind, caption in (("mean", "mean±std over runs (training seeds)"), ("run", "each run")):
            kind_rows = [r for r in rows if r["kind"] == kind]
            if not kind_rows:
                continue
            out.append(f"### {title}, {caption}\n")
            out.append("| " + " | ".join(heads) + " |")
            out.append("|" + "---|" * len(heads))
            current = None
            for r in kind_rows:
                if r["model"] != current:
                    current = r["model"]
                    out.append("| **" + current + "** |" + " |" * (len(heads) - 1))
                label = method_title(r["method"])
                if r.get("variant"):
                    label += f" [{r['variant']}]"
                if r.get("step") is not None:
                    label += f" @step{r['step']}"
                if kind == "mean" and r["n_runs"] > 1:
                    label += f" (n={r['n_runs']})"
                if kind == "run":
                    seed = "–" if r["train_seed"] is None else r["train_seed"]
                    label += f" seed={seed} ({r['run_name']})"
                out.append("| " + " | ".join([label, *_md_cells(r, pcols)]) + " |")
            out.append("")
    if limited:
        out.append("Runs evaluated on a subset (--limit): " + ", ".join(limited) + "\n")
    return "\n".join(out)


def render_csv(tables: dict[str, list[dict]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["table", "kind", "model", "method", "train_name", "step", "train_seed", "run_name", "n_runs",
                     "column", "mean", "std"])
    for name, rows in tables.items():
        for r in rows:
            for col in TABLES[name][1]:
                cell = r["values"].get(col.key)
                if cell is None:
                    continue
                step = "" if r.get("step") is None else r["step"]
                seed = "" if r.get("train_seed") is None else r["train_seed"]
                writer.writerow([name, r["kind"], r["model"], r["method"], r.get("train_name") or "", step, seed,
                                 r.get("run_name", ""), r.get("n_runs", 1), col.key, f"{cell['mean']:.4f}",
                                 "" if cell["std"] is None else f"{cell['std']:.4f}"])
    return buf.getvalue()


def build_report(paths: list[str]) -> tuple[dict[str, list[dict]], list[str]]:
    runs = [load_run(p) for p in find_runs(paths)]
    tables = {}
    for name, (_, columns) in TABLES.items():
        relevant = [r for r in runs if any(c.benchmark in r.metrics for c in columns)]
        if relevant:
            tables[name] = build_rows(relevant, columns)
    if not tables:
        raise ReportError("none of the runs has metrics.json for a Table 1 or Table 5 benchmark")
    limited = sorted({f"{r.run_name} ({b}: {k})" for r in runs for b, k in r.limits.items() if k is not None})
    return tables, limited


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.report",
        description="Tabulate evaluation runs like the paper's Table 1 (math) and Table 5 (Geometry3K, Spider, "
        "BIRD): one row per run and mean±std (sample std over runs) per model and method, in percent.")
    parser.add_argument("runs", nargs="+", help="evaluation.run --out folders, or folders holding several of them")
    parser.add_argument("--format", choices=("md", "csv", "json"), default="md", help="output format")
    parser.add_argument("--output", default=None, help="write to this file instead of stdout")
    args = parser.parse_args(argv)
    try:
        tables, limited = build_report(args.runs)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.format == "md":
        text = render_md(tables, limited)
    elif args.format == "csv":
        text = render_csv(tables)
    else:
        text = json.dumps({"tables": tables, "subset_runs": limited,
                           "columns": {n: [c.key for c in TABLES[n][1]] for n in tables}}, indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
