"""``python -m apmpo_openrlhf.compare``: GRPO, DAPO, GMPO and APMPO on the same local task.

Runs every (method, seed) of a compare config (default configs/local/compare.yaml) as its own
``python -m apmpo_openrlhf.train`` process, several at a time, then draws the panels of the paper's
Figure 1 (training reward, policy entropy, wall-clock training time per method), p and eps_high
over training, and writes a Markdown summary. Runs resume: an interrupted comparison continues
where it stopped, and finished runs are not repeated (``--plots-only`` just redraws).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import ConfigError, load_config

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COMPARE = REPO_ROOT / "configs" / "local" / "compare.yaml"
COLORS = {"grpo": "tab:blue", "dapo": "tab:orange", "gmpo": "tab:green", "apmpo": "tab:red"}


class CompareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str = Field("default.yaml", description="training config every run starts from (relative to this file)")
    output_dir: str = Field("outputs/compare", description="runs go to <output_dir>/<method>/seed_<seed>")
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    workers: int | None = Field(None, ge=1, description="runs at a time (None = number of CPU cores)")
    methods: dict[str, dict] = Field(..., min_length=1, description="method name -> config overrides (nested mapping)")
    set: list[str] = Field(default_factory=list, description="extra key=value overrides for every run")
    smooth: int = Field(10, ge=1, description="moving-average window (steps) of the plotted curves")


def load_compare_config(path: Path) -> CompareConfig:
    if not path.is_file():
        raise ConfigError(f"compare config not found: {path}")
    try:
        return CompareConfig.model_validate(yaml.safe_load(path.read_text()) or {})
    except ValidationError as err:
        lines = [f"invalid compare config ({path}):"]
        for e in err.errors():
            lines.append(f"  {'.'.join(map(str, e['loc']))}: {e['msg']}")
        raise ConfigError("\n".join(lines)) from None


def flatten(overrides: dict, prefix: str = "") -> list[str]:
    """{"algorithm": {"loss": "grpo"}} -> ["algorithm.loss=grpo"] (values as YAML)."""
    out = []
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out += flatten(value, path + ".")
        else:
            out.append(f"{path}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
    return out


def plan_runs(cc: CompareConfig, compare_path: Path, methods: list[str], seeds: list[int], extra: list[str]):
    base = (compare_path.parent / cc.base).resolve()
    runs = []
    # Seed-major order: the methods of one seed run side by side, so that changing machine load
    # affects every method alike (panel (c) compares wall-clock times).
    for seed in seeds:
        for method in methods:
            out = Path(cc.output_dir) / method / f"seed_{seed}"
            sets = [*flatten(cc.methods[method]), *cc.set, *extra, f"seed={seed}", f"output_dir={out}",
                    "local.num_threads=1", "local.progress_bar=false", f"name={method}-seed{seed}"]
            cfg = load_config(base, sets)  # validate every run before starting any
            runs.append({"method": method, "seed": seed, "out": out, "base": base, "sets": sets,
                         "max_steps": cfg.max_steps})
    return runs


def _finished(run: dict) -> bool:
    from .local.checkpoint import list_checkpoints

    found = list_checkpoints(run["out"])
    return bool(found) and found[-1][0] >= run["max_steps"]


def execute(runs: list[dict], workers: int) -> list[str]:
    """Run the training processes (finished ones are skipped); returns the failures."""
    from tqdm import tqdm

    todo = [r for r in runs if not _finished(r)]
    failures: list[str] = []
    bar = tqdm(total=len(runs), initial=len(runs) - len(todo), desc="compare runs", unit="run", file=sys.stderr)

    def one(run: dict) -> None:
        run["out"].mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "apmpo_openrlhf.train", "--config", str(run["base"])]
        for s in run["sets"]:
            cmd += ["--set", s]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        with (run["out"] / "train.log").open("w") as log:
            rc = subprocess.run(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        if rc != 0:
            failures.append(f"{run['method']} seed {run['seed']}: exit {rc} (see {run['out'] / 'train.log'})")
        bar.update(1)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, todo))
    bar.close()
    return failures


# --------------------------------------------------------------------------------- analysis
def _read(path: Path) -> list[dict]:
    from .local.metrics import read_metrics

    return read_metrics(path) if path.exists() else []


def _smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average; NaN (a step without that metric, e.g. all groups filtered) is skipped."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    out = []
    for i in range(len(v)):
        w = v[max(0, i - window + 1) : i + 1]
        w = w[~np.isnan(w)]
        out.append(float(w.mean()) if w.size else math.nan)
    return out


def _mean_curve(runs: list[list[dict]], key: str, window: int) -> tuple[list[int], list[float], list[float]]:
    import numpy as np

    n = min(len(r) for r in runs)
    curves = np.array([_smooth([row.get(key, math.nan) for row in r[:n]], window) for r in runs])
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(curves, axis=0)
            std = np.nanstd(curves, axis=0)
    return list(range(1, n + 1)), mean.tolist(), std.tolist()


def collect(runs: list[dict]) -> dict[str, list[list[dict]]]:
    by_method: dict[str, list[list[dict]]] = {}
    for run in runs:
        rows = _read(run["out"] / "metrics.jsonl")
        if rows:
            by_method.setdefault(run["method"], []).append(rows)
    return by_method


def plot(by_method: dict[str, list[list[dict]]], out_dir: Path, window: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for method, runs in by_method.items():
        color = COLORS.get(method)
        for ax, key in ((axes[0], "reward_mean"), (axes[1], "entropy")):
            x, m, s = _mean_curve(runs, key, window)
            ax.plot(x, m, label=method, color=color)
            ax.fill_between(x, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)], color=color, alpha=0.15)
    times = {m: [r[-1]["elapsed_s"] / 60 for r in runs] for m, runs in by_method.items()}
    names = list(times)
    axes[2].bar(names, [statistics.fmean(times[m]) for m in names],
                yerr=[statistics.pstdev(times[m]) if len(times[m]) > 1 else 0 for m in names],
                color=[COLORS.get(m, "gray") for m in names], capsize=4)
    axes[0].set(title="(a) training reward", xlabel="step", ylabel="mean reward")
    axes[1].set(title="(b) policy entropy", xlabel="step", ylabel="mean token entropy (nats)")
    axes[2].set(title="(c) training time", ylabel="wall-clock minutes (whole run)")
    axes[0].legend()
    fig.suptitle("Local arithmetic task: mean over seeds, shaded = std", fontsize=10)
    fig.tight_layout()
    path = out_dir / "figure1.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method, runs in by_method.items():
        for ax, key in ((axes[0], "p"), (axes[1], "eps_high")):
            x, m, s = _mean_curve(runs, key, window)
            ax.plot(x, m, label=method, color=COLORS.get(method))
            ax.fill_between(x, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)],
                            color=COLORS.get(method), alpha=0.15)
    axes[0].set(title="power-mean exponent p", xlabel="step", ylabel="p (GRPO/DAPO 1, GMPO 0)")
    axes[1].set(title="upper clip bound eps_high", xlabel="step", ylabel="eps_high")
    axes[0].legend()
    fig.tight_layout()
    path = out_dir / "adaptive.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def _fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.pstdev(values):.{digits}f}"


def summary(by_method: dict[str, list[list[dict]]], window: int) -> str:
    lines = [
        "| method | seeds | reward, first 20 steps | reward, last 50 steps | step reaching 0.8 (smoothed) "
        "| entropy, last 50 steps | wall-clock s per step | total minutes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method, runs in by_method.items():
        first = [statistics.fmean(r["reward_mean"] for r in run[:20]) for run in runs]
        last = [statistics.fmean(r["reward_mean"] for r in run[-50:]) for run in runs]
        ent = [statistics.fmean([r["entropy"] for r in run[-50:] if "entropy" in r] or [math.nan]) for run in runs]
        reach = []
        for run in runs:
            sm = _smooth([r["reward_mean"] for r in run], window)
            hit = next((i + 1 for i, v in enumerate(sm) if v >= 0.8), None)
            reach.append(str(hit) if hit is not None else "never")
        per_step = [statistics.fmean(r["step_time_s"] for r in run) for run in runs]
        total = [run[-1]["elapsed_s"] / 60 for run in runs]
        lines.append(
            f"| {method} | {len(runs)} | {_fmt(first)} | {_fmt(last)} | {', '.join(reach)} | {_fmt(ent)} "
            f"| {_fmt(per_step)} | {_fmt(total, 2)} |"
        )
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m apmpo_openrlhf.compare",
        description="Train GRPO, DAPO, GMPO and APMPO on the local task (several seeds, in parallel) and plot "
        "the paper's Figure 1 panels, p and eps_high over training, plus a Markdown summary.",
    )
    p.add_argument("--config", type=Path, default=DEFAULT_COMPARE,
                   help=f"compare config (default: {DEFAULT_COMPARE.relative_to(REPO_ROOT)})")
    p.add_argument("--methods", nargs="+", default=None, help="subset of the config's methods (default: all)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default: the config's)")
    p.add_argument("--workers", type=int, default=None, help="runs at a time (default: config, else CPU cores)")
    p.add_argument("--output-dir", default=None, help="where runs, plots and summary go (default: the config's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="training-config override for every run, repeatable (e.g. --set max_steps=300)")
    p.add_argument("--plots-only", action="store_true", help="do not train; redraw from existing runs")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cc = load_compare_config(args.config)
        if args.output_dir is not None:
            cc.output_dir = args.output_dir
        methods = args.methods or list(cc.methods)
        unknown = [m for m in methods if m not in cc.methods]
        if unknown:
            raise ConfigError(f"--methods: {unknown} not in the compare config (known: {list(cc.methods)})")
        if args.workers is not None and args.workers < 1:
            raise ConfigError(f"--workers={args.workers}: must be >= 1")
        runs = plan_runs(cc, args.config, methods, args.seeds or cc.seeds, args.overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failures = []
    if not args.plots_only:
        workers = args.workers or cc.workers or os.cpu_count() or 1
        failures = execute(runs, workers)
    by_method = collect(runs)
    if not by_method:
        print("error: no finished runs to plot", file=sys.stderr)
        return 1
    out_dir = Path(cc.output_dir)
    written = plot(by_method, out_dir, cc.smooth)
    text = summary(by_method, cc.smooth)
    (out_dir / "summary.md").write_text(text)
    written.append(out_dir / "summary.md")
    print(text)
    print("wrote: " + ", ".join(str(p) for p in written))
    for f in failures:
        print(f"failed: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
