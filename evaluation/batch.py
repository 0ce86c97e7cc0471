"""Batch evaluation: every checkpoint of a training run, or every run of an experiment, then the report.

    python -m evaluation.batch checkpoints RUN_DIR OUT_ROOT [-- evaluation.run options]
    python -m evaluation.batch experiment EXPERIMENT_DIR OUT_ROOT [--base MODEL] [-- evaluation.run options]

A model folder is a folder with config.json and weights (*.safetensors / pytorch_model*.bin).
``checkpoints`` evaluates each model folder under RUN_DIR (checkpoints/global_step*_hf, final_model,
...) in training-step order. ``experiment`` evaluates, for each training run directly under
EXPERIMENT_DIR (one per method x seed), its final model: ``final_model`` if present, else its last
checkpoint. Each model is evaluated by ``python -m evaluation.run`` in its own process (so GPU
memory is freed between models) into OUT_ROOT/<name>; finished models are skipped by the
harness's own resume, so rerunning a batch continues it. Then OUT_ROOT/report.{md,csv,json}.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from .run_info import checkpoint_step

_WEIGHTS = ("*.safetensors", "pytorch_model*.bin")
_SKIP_DIRS = {"tensorboard", "wandb", "__pycache__", ".git"}


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(any(path.glob(p)) for p in _WEIGHTS)


def find_model_dirs(root: Path, max_depth: int = 4) -> list[Path]:
    """Model folders under ``root`` (itself included), ordered by training step, final models last."""
    found = []

    def walk(p: Path, depth: int) -> None:
        if is_model_dir(p):
            found.append(p)
            return
        if depth >= max_depth:
            return
        for child in sorted(p.iterdir()):
            if child.is_dir() and child.name not in _SKIP_DIRS:
                walk(child, depth + 1)

    walk(root, 0)
    return sorted(found, key=lambda d: (checkpoint_step(d) is None, checkpoint_step(d) or 0, str(d)))


def final_model(run_dir: Path) -> Path | None:
    if is_model_dir(run_dir / "final_model"):
        return run_dir / "final_model"
    models = [d for d in find_model_dirs(run_dir) if checkpoint_step(d) is not None]
    return models[-1] if models else None


def _out_name(root: Path, model: Path) -> str:
    rel = model.relative_to(root).as_posix() if model != root else model.name
    return re.sub(r"[^A-Za-z0-9_.-]+", "__", rel)


def evaluate(models: list[tuple[Path, Path, list[str]]], run_args: list[str]) -> int:
    for i, (model, out, extra) in enumerate(models, 1):
        print(f"[{i}/{len(models)}] {model} -> {out}", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "evaluation.run", "--model", str(model), "--out", str(out), *extra, *run_args]
        rc = subprocess.call(cmd)
        if rc != 0:
            print(f"error: evaluation of {model} failed (exit {rc}); fix it and rerun this command to continue",
                  file=sys.stderr)
            return rc
    return 0


def write_reports(out_root: Path) -> int:
    from . import report

    for fmt in ("md", "csv", "json"):
        rc = report.main([str(out_root), "--format", fmt, "--output", str(out_root / f"report.{fmt}")])
        if rc != 0:
            return rc
    print((out_root / "report.md").read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    run_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, run_args = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.batch", description=__doc__.split("\n\n")[0],
        epilog="Options after -- go to every python -m evaluation.run call (e.g. -- --benchmarks math500 --n 16).")
    sub = parser.add_subparsers(dest="command", required=True)
    ck = sub.add_parser("checkpoints", help="evaluate every checkpoint of one training run")
    ck.add_argument("run_dir", help="training output_dir (holds checkpoints/ and final_model/)")
    ck.add_argument("out_root", help="results folder: one evaluation.run --out per checkpoint, plus report.*")
    ex = sub.add_parser("experiment", help="evaluate the final model of every training run of an experiment")
    ex.add_argument("experiment_dir", help="folder whose subfolders are training output_dirs (method x seed)")
    ex.add_argument("out_root", help="results folder: one evaluation.run --out per run, plus report.*")
    ex.add_argument("--base", default=None, help="also evaluate this base model (method 'base')")
    args = parser.parse_args(argv)

    jobs: list[tuple[Path, Path, list[str]]] = []
    if args.command == "checkpoints":
        root = Path(args.run_dir)
        if not root.is_dir():
            print(f"error: run_dir {root} not found", file=sys.stderr)
            return 2
        models = find_model_dirs(root)
        if not models:
            print(f"error: no model folder (config.json + weights) under {root}", file=sys.stderr)
            return 2
        out_root = Path(args.out_root)
        jobs = [(m, out_root / _out_name(root, m), []) for m in models]
    else:
        root = Path(args.experiment_dir)
        if not root.is_dir():
            print(f"error: experiment_dir {root} not found", file=sys.stderr)
            return 2
        out_root = Path(args.out_root)
        if args.base:
            jobs.append((Path(args.base), out_root / "base", ["--method", "base"]))
        for run_dir in sorted(d for d in root.iterdir() if d.is_dir()):
            model = final_model(run_dir)
            if model is None:
                print(f"skipping {run_dir}: no final_model or checkpoint folder in it", file=sys.stderr)
                continue
            jobs.append((model, out_root / run_dir.name, ["--run-name", run_dir.name]))
        if not jobs:
            print(f"error: no training run with a model folder under {root}", file=sys.stderr)
            return 2
    out_root.mkdir(parents=True, exist_ok=True)
    rc = evaluate(jobs, run_args)
    return rc if rc else write_reports(out_root)


if __name__ == "__main__":
    sys.exit(main())
