"""``python -m apmpo_openrlhf.compare``: GRPO, DAPO, GMPO and APMPO on the same local task.

Runs every (method, seed) of a compare config as its own ``python -m apmpo_openrlhf.train``
process, several at a time, then draws the panels of the paper's Figure 1 and writes a Markdown
summary. Two presets: ``--preset toy`` (configs/local/compare.yaml on the embedded default task,
where every method reaches ~0.98) and ``--preset testbed`` (configs/local/compare_testbed.yaml on
configs/local/testbed.yaml: two-digit addition graded exactly, a warm start, held-out problems).
``--ablations`` adds Table 6's GRPO+FAC and GRPO+PMPO, ``--baselines`` GSPO, Dr. GRPO and CISPO, and
``--group NAME`` a study of the config's ``groups:`` (testbed: ``dapo_parts``, DAPO's parts alone and
combined; ``compute_matched``, the same budget of generated samples for every method).
Outputs in the output directory:

* ``figure1.png``: training reward, token entropy, p, eps_high, clip fractions (mean and 95%
  t-band over seeds) and seconds per step; ``adaptive.png``: p and eps_high alone;
* ``heldout.png``: held-out Pass@k (k = 1..16) at the end and held-out Pass@1 over training
  (runs with ``local.heldout_eval``);
* ``summary.md``: mean ± std per method and a paired significance statement per pair of methods
  (paired bootstrap CI over seeds and the exact sign-flip test, apmpo_openrlhf/stats.py);
* ``results.json``: every per-seed number behind the summary (steps, generated samples, ...);
* ``figure1_<group>.png``, ``heldout_<group>.png``: the same panels for one group's methods and the
  methods its comparisons name.

Runs resume: an interrupted comparison continues where it stopped, and finished runs are not
repeated (``--plots-only`` just redraws).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .config import ConfigError, load_config
from .local.metrics import moving_average, read_metrics

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COMPARE = REPO_ROOT / "configs" / "local" / "compare.yaml"
PRESETS = {
    "toy": DEFAULT_COMPARE,
    "testbed": REPO_ROOT / "configs" / "local" / "compare_testbed.yaml",
    "backends": REPO_ROOT / "configs" / "local" / "compare_backends.yaml",
}
BACKENDS = ("local", "openrlhf")
BACKEND_STYLE = {"local": "-", "openrlhf": "--"}


def base_method(name: str) -> str:
    """``apmpo@openrlhf`` -> ``apmpo`` (a run label of ``--backends``)."""
    return name.split("@", 1)[0]


def color_of(name: str) -> str | None:
    return COLORS.get(name, COLORS.get(base_method(name)))
COLORS = {"grpo": "tab:blue", "dapo": "tab:orange", "gmpo": "tab:green", "apmpo": "tab:red",
          "grpo_fac": "tab:purple", "grpo_pmpo": "tab:brown", "gspo": "tab:pink", "drgrpo": "tab:gray",
          "cispo": "tab:olive",
          # DAPO's parts (testbed group dapo_parts); a variant under a sample budget (compute_matched:
          # `<name>_matched`, `<name>_2x`) is drawn in the color of <name>, dashed / dash-dotted
          "dapo_no_ds": "goldenrod", "grpo_ds": "tab:cyan", "apmpo_ds": "salmon", "grpo_cliphigher": "lightskyblue",
          "grpo_tokenmean": "navy", "grpo_tokenmean_ds": "teal", "grpo_cliphigher_ds": "slateblue"}
BUDGET_STYLES = {"_matched": "--", "_2x": "-."}


def color_of(method: str) -> str | None:
    for suffix in BUDGET_STYLES:
        method = method.removesuffix(suffix)
    return COLORS.get(method)


def line_style(method: str, solid: str = "-") -> str:
    """A budget variant's line style (the marker of ``solid``, e.g. "o-", is kept)."""
    for suffix, style in BUDGET_STYLES.items():
        if method.endswith(suffix):
            return solid.replace("-", style)
    return solid


class Contrast(BaseModel):
    """Per seed: mean over ``plus`` minus mean over ``minus`` (e.g. a factor's main effect in a factorial
    design), tested like a pair of methods."""

    model_config = ConfigDict(extra="forbid")

    help: str = Field("", description="what the contrast measures")
    plus: list[str] = Field(..., min_length=1, description="methods averaged on the + side")
    minus: list[str] = Field(..., min_length=1, description="methods averaged on the - side")


class MethodGroup(BaseModel):
    """A study run with ``--group NAME``: its methods, and the comparisons it exists for."""

    model_config = ConfigDict(extra="forbid")

    help: str = Field(..., min_length=1, description="what the group studies (shown by --help)")
    methods: dict[str, dict] = Field(..., min_length=1, description="method name -> config overrides")
    pairs: list[tuple[str, str]] = Field(
        default_factory=list, description="(a, b) comparisons of any methods of the config, listed first in summary.md"
    )
    contrasts: dict[str, Contrast] = Field(default_factory=dict, description="per-seed contrasts (see Contrast)")


class CompareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str = Field("default.yaml", description="training config every run starts from (relative to this file)")
    output_dir: str = Field("outputs/compare", description="runs go to <output_dir>/<method>/seed_<seed>")
    seeds: list[int] = Field([0, 1, 2], min_length=1)
    workers: int | None = Field(None, ge=1, description="runs at a time (None = number of CPU cores)")
    methods: dict[str, dict] = Field(..., min_length=1, description="method name -> config overrides (nested mapping)")
    ablations: dict[str, dict] = Field(
        default_factory=dict, description="extra methods run with --ablations (e.g. Table 6's grpo_fac, grpo_pmpo)"
    )
    baselines: dict[str, dict] = Field(
        default_factory=dict, description="extra methods run with --baselines (GSPO, Dr. GRPO, CISPO)"
    )
    groups: dict[str, MethodGroup] = Field(
        default_factory=dict, description="studies run with --group NAME (methods, key pairs, contrasts)"
    )
    title: str = Field("Local arithmetic task", description="title of the figures")
    set: list[str] = Field(default_factory=list, description="extra key=value overrides for every run")
    smooth: int = Field(10, ge=1, description="moving-average window (steps) of the plotted curves")

    @model_validator(mode="after")
    def _names(self) -> "CompareConfig":
        sections = {"methods": self.methods, "ablations": self.ablations, "baselines": self.baselines,
                    **{f"groups.{g}.methods": grp.methods for g, grp in self.groups.items()}}
        seen: dict[str, str] = {}
        for where, table in sections.items():
            for name in table:
                if name in seen:
                    raise ValueError(f"method {name!r} is defined twice ({seen[name]} and {where})")
                seen[name] = where
        for g, grp in self.groups.items():
            if g in GROUP_KEYWORDS:
                raise ValueError(f"groups.{g}: {sorted(GROUP_KEYWORDS)} are reserved group names")
            named = [m for pair in grp.pairs for m in pair]
            named += [m for c in grp.contrasts.values() for m in (*c.plus, *c.minus)]
            unknown = sorted({m for m in named if m not in seen})
            if unknown:
                raise ValueError(f"groups.{g}: pairs/contrasts name {unknown}, not methods of this config")
        return self


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


# --group values that are not entries of `groups:`: the ablations and baselines sections, and everything
GROUP_KEYWORDS = ("ablations", "baselines", "all")


def all_methods(cc: CompareConfig) -> dict[str, dict]:
    return {**cc.methods, **cc.ablations, **cc.baselines, **{m: o for g in cc.groups.values() for m, o in g.methods.items()}}


def group_methods(cc: CompareConfig, name: str) -> list[str]:
    """The methods a --group value adds (ablations / baselines: those sections; all: every extra method)."""
    if name == "ablations":
        return list(cc.ablations)
    if name == "baselines":
        return list(cc.baselines)
    if name == "all":
        return [m for m in all_methods(cc) if m not in cc.methods]
    if name not in cc.groups:
        raise ConfigError(f"--group {name}: not a group of this compare config (known: "
                          f"{[*cc.groups, *GROUP_KEYWORDS]})")
    return list(cc.groups[name].methods)


def group_members(group: MethodGroup) -> list[str]:
    """A group's methods and every method its pairs and contrasts name (the figures of the group)."""
    named = [m for pair in group.pairs for m in pair] + [m for c in group.contrasts.values() for m in (*c.minus, *c.plus)]
    return list(dict.fromkeys([*named, *group.methods]))


def plan_runs(cc: CompareConfig, compare_path: Path, methods: list[str], seeds: list[int], extra: list[str],
              backends: list[str] | None = None):
    """Every (method, seed) run; with ``backends`` every (method, backend, seed) run, labelled
    ``method@backend`` (same config and seed on each backend: ``--set backend=...``)."""
    base = (compare_path.parent / cc.base).resolve()
    runs = []
    # Seed-major order: the methods of one seed run side by side, so that changing machine load
    # affects every method alike (panel (c) compares wall-clock times).
    for seed in seeds:
        for method in methods:
            for backend in backends or [None]:
                label = method if backend is None else f"{method}@{backend}"
                out = Path(cc.output_dir) / method / (backend or "") / f"seed_{seed}"
                sets = [*flatten(all_methods(cc)[method]), *cc.set, *extra, f"seed={seed}", f"output_dir={out}",
                        "local.num_threads=1", "local.progress_bar=false", f"name={method}-seed{seed}"]
                if backend is not None:
                    sets.append(f"backend={backend}")
                cfg = load_config(base, sets)  # validate every run before starting any
                if cfg.backend == "openrlhf":
                    from .openrlhf_adapter import cpu_backend

                    if cpu_backend.active():
                        cpu_backend.check_config(cfg)  # the CPU layout, before any run starts
                runs.append({"method": label, "seed": seed, "out": out, "base": base, "sets": sets,
                             "max_steps": cfg.max_steps, "backend": cfg.backend,
                             "budget": cfg.local.max_generated_samples})
    return runs


def _finished(run: dict) -> bool:
    """The run's last checkpoint is at max_steps, or at the step where its sample budget was spent."""
    from .local.checkpoint import list_checkpoints

    summary = run["out"] / "summary.json"
    if summary.is_file():  # both backends end with it
        return json.loads(summary.read_text())["reward"]["steps"] >= run["max_steps"]
    found = list_checkpoints(run["out"])
    if not found:
        return False
    step = found[-1][0]
    if step >= run["max_steps"]:
        return True
    if run.get("budget") is None:
        return False
    row = next((r for r in _read(run["out"] / "metrics.jsonl") if r.get("step") == step), {})
    return row.get("samples_generated_total", 0) >= run["budget"]


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
    return read_metrics(path) if path.exists() else []


def _mean_curve(runs: list[list[dict]], key: str, window: int) -> tuple[list[int], list[float], list[float]]:
    """Steps, mean over seeds of the smoothed curve, and the half-width of its 95% t-interval
    (per step, over the seeds that logged the metric there; 0 where fewer than two did)."""
    from .stats import t_interval

    n = min(len(r) for r in runs)
    curves = [moving_average([row.get(key, math.nan) for row in r[:n]], window) for r in runs]
    per_step = [t_interval([c[i] for c in curves]) for i in range(n)]
    return (list(range(1, n + 1)), [m for m, _ in per_step],
            [0.0 if math.isnan(h) else h for _, h in per_step])


def collect_runs(runs: list[dict]) -> dict[str, list[dict]]:
    """method -> [{"seed", "rows" (metrics.jsonl), "heldout" (heldout.json or None), "heldout_curve"
    (heldout.jsonl rows), "warmstart" (warmstart/info.json or None)}] for the runs that have metrics."""
    out: dict[str, list[dict]] = {}
    for run in runs:
        rows = _read(run["out"] / "metrics.jsonl")
        if not rows:
            continue
        final = run["out"] / "heldout.json"
        ws = run["out"] / "warmstart" / "info.json"
        out.setdefault(run["method"], []).append({
            "seed": run["seed"],
            "rows": rows,
            "heldout": json.loads(final.read_text()) if final.is_file() else None,
            "heldout_curve": _read(run["out"] / "heldout.jsonl"),
            "warmstart": json.loads(ws.read_text()) if ws.is_file() else None,
        })
    return out


def collect(runs: list[dict]) -> dict[str, list[list[dict]]]:
    return {m: [r["rows"] for r in rs] for m, rs in collect_runs(runs).items()}


def _band(ax, x, m, h, color, label=None, style="-"):
    if label is not None:
        style = line_style(label, style)
    ax.plot(x, m, style, label=label, color=color)
    ax.fill_between(x, [a - b for a, b in zip(m, h)], [a + b for a, b in zip(m, h)], color=color, alpha=0.15)


def _samples_at(rows: list[dict], step: int) -> float:
    """Generated training samples up to ``step`` (0 before the first step; NaN if the run did not count them)."""
    if step == 0:
        return 0.0
    row = next((r for r in rows if r.get("step") == step), None)
    return float(row["samples_generated_total"]) if row and "samples_generated_total" in row else math.nan


def plot(by_method: dict[str, list[list[dict]]], out_dir: Path, window: int, title: str = "Local arithmetic task",
         details: dict[str, list[dict]] | None = None, suffix: str = "") -> list[Path]:
    """figure1<suffix>.png and heldout<suffix>.png (adaptive.png without a suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .stats import t_interval

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    ax = axes.ravel()
    for method, runs in by_method.items():
        color, style = color_of(method), BACKEND_STYLE.get(method.partition("@")[2], "-")
        for a, key in ((ax[0], "reward_mean"), (ax[1], "entropy"), (ax[2], "p"), (ax[3], "eps_high")):
            _band(a, *_mean_curve(runs, key, window), color, label=method, style=style)
        _band(ax[4], *_mean_curve(runs, "clip_frac_high", window), color, label=f"{method} high", style=style)
        _band(ax[4], *_mean_curve(runs, "clip_frac_low", window), color, style=":")
    names = list(by_method)
    per_step = {m: t_interval([statistics.fmean(r["step_time_s"] for r in run) for run in by_method[m]]) for m in names}
    ax[5].bar(names, [per_step[m][0] for m in names], yerr=[per_step[m][1] for m in names],
              color=[color_of(m) or "gray" for m in names], capsize=4)
    ax[0].set(title="(a) training reward", xlabel="step", ylabel="mean reward of the sampled batch")
    ax[1].set(title="(b) token entropy", xlabel="step", ylabel="mean token entropy (nats)")
    ax[2].set(title="(c) power-mean exponent p", xlabel="step", ylabel="p (GRPO/DAPO 1, GMPO 0)")
    ax[3].set(title="(d) upper clip bound eps_high", xlabel="step", ylabel="eps_high (GMPO: e^0.4 - 1, its log clip)")
    ax[4].set(title="(e) clip fractions (solid: upper, dotted: lower)", xlabel="step", ylabel="fraction of tokens")
    ax[5].set(title="(f) time per step", ylabel="wall-clock s per step (whole step)")
    ax[5].tick_params(axis="x", rotation=30)
    ax[0].legend(fontsize=8, ncol=2 if len(by_method) > 8 else 1)
    n_seeds = sorted({len(r) for r in by_method.values()})
    fig.suptitle(f"{title}: mean over {'/'.join(map(str, n_seeds))} seeds, shaded = 95% t-interval over seeds "
                 f"(curves: {window}-step moving average; dashed / dash-dotted: `_matched` / `_2x` runs under a "
                 "sample budget)",
                 fontsize=10)
    fig.tight_layout()
    path = out_dir / f"figure1{suffix}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)

    if not suffix:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for method, runs in by_method.items():
            for a, key in ((axes[0], "p"), (axes[1], "eps_high")):
                _band(a, *_mean_curve(runs, key, window), color_of(method), label=method,
                      style=BACKEND_STYLE.get(method.partition("@")[2], "-"))
        axes[0].set(title="power-mean exponent p", xlabel="step", ylabel="p (GRPO/DAPO 1, GMPO 0)")
        axes[1].set(title="upper clip bound eps_high", xlabel="step", ylabel="eps_high")
        axes[0].legend(fontsize=8, ncol=2 if len(by_method) > 8 else 1)
        fig.tight_layout()
        path = out_dir / "adaptive.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    held = {m: [r for r in rs if r["heldout"] is not None] for m, rs in (details or {}).items()}
    held = {m: rs for m, rs in held.items() if rs}
    if held:
        fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
        for method, rs in held.items():
            color = color_of(method)
            n = min(r["heldout"]["n_samples"] for r in rs)
            ks = list(range(1, n + 1))
            stats_k = [t_interval([r["heldout"]["pass_at_k"][str(k)] for r in rs]) for k in ks]
            _band(axes[0], ks, [m for m, _ in stats_k], [h for _, h in stats_k], color, label=method)
            with_curve = [r for r in rs if r["heldout_curve"]]
            if with_curve:
                steps = sorted(set.intersection(*[{row["step"] for row in r["heldout_curve"]} for r in with_curve]))
                st = [t_interval([next(row["pass@1"] for row in r["heldout_curve"] if row["step"] == s)
                                  for r in with_curve]) for s in steps]
                _band(axes[1], steps, [m for m, _ in st], [h for _, h in st], color, label=method, style="o-")
                # the same points against the samples generated so far (mean over seeds): compute on the x axis
                xs = [statistics.fmean(_samples_at(r["rows"], s) for r in with_curve) for s in steps]
                pts = [(x, m, h) for x, (m, h) in zip(xs, st) if not math.isnan(x)]
                if pts:
                    _band(axes[2], [x / 1000 for x, _, _ in pts], [m for _, m, _ in pts], [h for _, _, h in pts],
                          color, label=method, style="o-")
        axes[0].set_xscale("log", base=2)
        axes[0].set(title="(a) held-out Pass@k at the end of training", xlabel="k (samples per problem)",
                    ylabel="unbiased Pass@k")
        axes[1].set(title="(b) held-out Pass@1 during training", xlabel="step", ylabel="Pass@1")
        axes[2].set(title="(c) held-out Pass@1 against generated training samples",
                    xlabel="training samples generated (thousands; mean over seeds)", ylabel="Pass@1")
        axes[0].legend(fontsize=8, ncol=2 if len(held) > 8 else 1)
        fig.suptitle(f"{title}: problems never trained on; mean over seeds, shaded = 95% t-interval", fontsize=10)
        fig.tight_layout()
        path = out_dir / f"heldout{suffix}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _fmt(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if not math.isnan(v)]  # e.g. a run whose every step was filtered out
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.pstdev(values):.{digits}f}"


def _fmt_count(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:,.0f}"
    return f"{statistics.fmean(values):,.0f} ± {statistics.pstdev(values):,.0f}"


def summary(by_method: dict[str, list[list[dict]]], window: int) -> str:
    lines = [
        "| method | seeds | reward, first 20 steps | reward, last 50 steps | step reaching 0.8 (smoothed) "
        "| entropy, last 50 steps | wall-clock s per step | total minutes | steps | samples generated |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for method, runs in by_method.items():
        first = [statistics.fmean(r["reward_mean"] for r in run[:20]) for run in runs]
        last = [statistics.fmean(r["reward_mean"] for r in run[-50:]) for run in runs]
        ent = [statistics.fmean([r["entropy"] for r in run[-50:] if "entropy" in r] or [math.nan]) for run in runs]
        reach = []
        for run in runs:
            sm = moving_average([r["reward_mean"] for r in run], window)
            hit = next((i + 1 for i, v in enumerate(sm) if v >= 0.8), None)
            reach.append(str(hit) if hit is not None else "never")
        per_step = [statistics.fmean(r["step_time_s"] for r in run) for run in runs]
        total = [run[-1]["elapsed_s"] / 60 for run in runs]
        steps = [float(run[-1]["step"]) for run in runs]
        samples = [float(run[-1].get("samples_generated_total", math.nan)) for run in runs]
        lines.append(
            f"| {method} | {len(runs)} | {_fmt(first)} | {_fmt(last)} | {', '.join(reach)} | {_fmt(ent)} "
            f"| {_fmt(per_step)} | {_fmt(total, 2)} | {_fmt_count(steps)} | {_fmt_count(samples)} |"
        )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------- per-seed scalars, pairs
def _last(rows: list[dict], key: str, n: int = 50) -> float:
    vals = [r[key] for r in rows[-n:] if key in r and not math.isnan(r[key])]
    return statistics.fmean(vals) if vals else math.nan


def run_scalars(run: dict) -> dict[str, float]:
    """The numbers of one (method, seed) that the summary compares."""
    rows = run["rows"]
    out = {
        "train_reward_last50": _last(rows, "reward_mean"),
        "entropy_last50": _last(rows, "entropy"),
        "entropy_min": min((r["entropy"] for r in rows if "entropy" in r), default=math.nan),
        "clip_frac_high_mean": _last(rows, "clip_frac_high", len(rows)),
        "clip_frac_low_mean": _last(rows, "clip_frac_low", len(rows)),
        "s_per_step": statistics.fmean(r["step_time_s"] for r in rows),
        "train_minutes": rows[-1]["elapsed_s"] / 60,
        "steps": rows[-1]["step"],
    }
    if "samples_generated_total" in rows[-1]:  # every training response sampled, dynamic sampling's rounds included
        out["samples_generated_total"] = rows[-1]["samples_generated_total"]
        out["samples_per_step"] = out["samples_generated_total"] / rows[-1]["step"]
    if run["warmstart"] is not None:
        out["warmstart_accuracy"] = run["warmstart"]["accuracy"]
        out["warmstart_steps"] = run["warmstart"]["steps"]
        out["warmstart_s"] = run["warmstart"]["seconds"]
    h = run["heldout"]
    if h is not None:
        out["heldout_pass@1"] = h["pass_at_k"]["1"]
        n = h["n_samples"]
        for k in (4, n):
            if str(k) in h["pass_at_k"]:
                out[f"heldout_pass@{k}"] = h["pass_at_k"][str(k)]
    return out


SIGNIFICANCE = 0.05
PAIR_METRICS = [("heldout_pass@1", "held-out Pass@1"), ("heldout_pass@16", "held-out Pass@16"),
                ("entropy_last50", "entropy, last 50 steps"), ("train_reward_last50", "training reward, last 50 steps")]


def _pair_entry(per_run: dict[str, dict[int, dict]], a: str, b: str) -> dict:
    """Paired comparison of methods a and b on their common seeds, for every metric of PAIR_METRICS."""
    from .stats import compare_pair

    seeds = sorted(set(per_run[a]) & set(per_run[b]))
    entry = {"a": a, "b": b, "seeds": seeds}
    for key, _ in PAIR_METRICS:
        va = [per_run[a][s].get(key, math.nan) for s in seeds]
        vb = [per_run[b][s].get(key, math.nan) for s in seeds]
        ok = [i for i in range(len(seeds)) if not (math.isnan(va[i]) or math.isnan(vb[i]))]
        if ok:
            entry[key] = compare_pair([va[i] for i in ok], [vb[i] for i in ok])
    return entry


def _contrast_entry(per_run: dict[str, dict[int, dict]], name: str, contrast: Contrast) -> dict | None:
    """Per seed mean(plus) - mean(minus), on the seeds every named method has, tested like a pair."""
    from .stats import compare_pair

    names = [*contrast.plus, *contrast.minus]
    if any(m not in per_run for m in names):
        return None
    seeds = sorted(set.intersection(*[set(per_run[m]) for m in names]))
    entry = {"name": name, "a": f"{name} (+)", "b": f"{name} (-)", "help": contrast.help, "plus": contrast.plus,
             "minus": contrast.minus, "seeds": seeds}
    for key, _ in PAIR_METRICS:
        side = {}
        for sign, members in (("plus", contrast.plus), ("minus", contrast.minus)):
            side[sign] = [statistics.fmean(per_run[m][s].get(key, math.nan) for m in members) for s in seeds]
        ok = [i for i in range(len(seeds)) if not (math.isnan(side["plus"][i]) or math.isnan(side["minus"][i]))]
        if ok:
            entry[key] = compare_pair([side["plus"][i] for i in ok], [side["minus"][i] for i in ok])
    return entry


def analyse(details: dict[str, list[dict]], groups: dict[str, MethodGroup] | None = None) -> dict:
    """Per-seed scalars of every run, the paired comparison of every pair of methods (common seeds) and,
    for each group, its own pairs (in its orientation) and contrasts, where their methods have runs."""
    from .stats import t_interval

    per_run = {m: {r["seed"]: run_scalars(r) for r in rs} for m, rs in details.items()}
    methods = {}
    for m, by_seed in per_run.items():
        keys = sorted({k for v in by_seed.values() for k in v})
        methods[m] = {"seeds": sorted(by_seed), "per_seed": by_seed, "mean": {}, "std": {}, "ci95": {}}
        for k in keys:
            vals = [v[k] for v in by_seed.values() if k in v and not math.isnan(v[k])]
            if vals:
                methods[m]["mean"][k] = statistics.fmean(vals)
                methods[m]["std"][k] = statistics.stdev(vals) if len(vals) > 1 else 0.0
                methods[m]["ci95"][k] = t_interval(vals)[1]
    pairs = [_pair_entry(per_run, a, b) for a, b in itertools.combinations(list(per_run), 2)]
    by_group = {}
    for g, grp in (groups or {}).items():
        contrasts = [_contrast_entry(per_run, name, c) for name, c in grp.contrasts.items()]
        by_group[g] = {
            "help": grp.help,
            "pairs": [_pair_entry(per_run, a, b) for a, b in grp.pairs if a in per_run and b in per_run],
            "contrasts": [c for c in contrasts if c is not None],
        }
    return {"methods": methods, "pairs": pairs, "groups": by_group}


def _ms(m: dict, key: str, digits: int = 3) -> str:
    if key not in m["mean"]:
        return "n/a"
    if key in COUNT_COLUMNS:
        return f"{m['mean'][key]:,.0f} ± {m['std'][key]:,.0f}"
    return f"{m['mean'][key]:.{digits}f} ± {m['std'][key]:.{digits}f}"


COUNT_COLUMNS = ("steps", "samples_generated_total")


def statement(entry: dict, key: str) -> str:
    """One sentence on a pair for one metric: which is higher and whether the data can tell."""
    c = entry.get(key)
    if c is None:
        return "n/a"
    a, b = entry["a"], entry["b"]
    ci_excludes_0 = c["ci_low"] > 0 or c["ci_high"] < 0
    direction = f"{a} > {b}" if c["mean_diff"] > 0 else f"{b} > {a}"
    wins = f"{a} higher in {c['wins']}/{c['n']} seeds"
    tail = f"({wins}; bootstrap 95% CI [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], sign-flip p = {c['p_sign_flip']:.3f})"
    # The exact test decides; the bootstrap CI of a handful of seeds is too narrow to decide alone.
    if c["p_sign_flip"] < SIGNIFICANCE and ci_excludes_0:
        return f"**{direction}** (significant: p < {SIGNIFICANCE}) {tail}"
    if ci_excludes_0:
        return f"{direction} only suggestively (CI excludes 0 but p >= {SIGNIFICANCE}) {tail}"
    return f"not distinguishable {tail}"


def summary_testbed(analysis: dict) -> str:
    """Markdown: mean ± std per method over seeds, and the paired comparisons."""
    from .stats import min_sign_flip_p

    ms = analysis["methods"]
    held = any("heldout_pass@1" in m["mean"] for m in ms.values())
    lines = ["", "## Per method (mean ± sample std over seeds)", ""]
    cols = [("train_reward_last50", "train reward, last 50"), ("entropy_last50", "entropy, last 50"),
            ("entropy_min", "min entropy"), ("clip_frac_high_mean", "clip frac high"),
            ("clip_frac_low_mean", "clip frac low"), ("s_per_step", "s / step")]
    if held:
        cols = [("heldout_pass@1", "held-out Pass@1"), ("heldout_pass@4", "Pass@4"),
                ("heldout_pass@16", "Pass@16"), *cols]
    if any("warmstart_accuracy" in m["mean"] for m in ms.values()):
        cols.append(("warmstart_accuracy", "warm-start acc."))
    if any("samples_generated_total" in m["mean"] for m in ms.values()):
        cols += [("steps", "steps"), ("samples_generated_total", "samples generated")]
    lines.append("| method | seeds | " + " | ".join(c for _, c in cols) + " |")
    lines.append("| --- | --- |" + " --- |" * len(cols))
    for name, m in ms.items():
        lines.append(f"| {name} | {len(m['seeds'])} | " + " | ".join(_ms(m, k) for k, _ in cols) + " |")
    lines += _samples_per_run(ms)
    if not analysis["pairs"]:
        return "\n".join(lines) + "\n"
    main_key = "heldout_pass@1" if held else "train_reward_last50"
    for g, grp in analysis.get("groups", {}).items():
        if not (grp["pairs"] or grp["contrasts"]):
            continue
        lines += ["", f"## Group `{g}`: the comparisons it exists for", "", grp["help"], ""]
        if grp["pairs"]:
            lines += _pairs_table(grp["pairs"])
        if grp["contrasts"]:
            lines += ["", "Contrasts: per seed, the mean over the (+) methods minus the mean over the (-) methods, "
                      "tested like a pair:", ""]
            for c in grp["contrasts"]:
                lines.append(f"- `{c['name']}`: (+) {', '.join(c['plus'])}; (-) {', '.join(c['minus'])}"
                             + (f". {c['help']}" if c["help"] else ""))
            lines += ["", *_pairs_table(grp["contrasts"])]
        lines += ["", f"Statements ({dict(PAIR_METRICS)[main_key]}):", ""]
        for p in [*grp["pairs"], *grp["contrasts"]]:
            lines.append(f"- {p['a']} vs {p['b']}: {statement(p, main_key)}")
    n_common = min(len(p["seeds"]) for p in analysis["pairs"])
    lines += ["", "## Paired comparisons (same seeds: same base model, warm start and split)", "",
              "Difference a - b of the per-seed values; 95% CI: percentile bootstrap over seeds (10,000 resamples); "
              f"p: exact two-sided sign-flip test (with {n_common} seeds its smallest possible value is "
              f"{min_sign_flip_p(n_common):.4f}). A pair is called significantly different when p < {SIGNIFICANCE} "
              "(and the CI excludes 0); a CI that excludes 0 with a larger p is reported as suggestive only "
              "(a percentile bootstrap over a handful of seeds is too narrow).", ""]
    lines += _pairs_table(analysis["pairs"])
    lines += ["", f"Statements ({dict(PAIR_METRICS)[main_key]}):", ""]
    for p in analysis["pairs"]:
        lines.append(f"- {p['a']} vs {p['b']}: {statement(p, main_key)}")
    lines += ["", "Statements (entropy, last 50 steps):", ""]
    for p in analysis["pairs"]:
        lines.append(f"- {p['a']} vs {p['b']}: {statement(p, 'entropy_last50')}")
    return "\n".join(lines) + "\n"


def _pairs_table(entries: list[dict]) -> list[str]:
    """| a | b | per metric: a - b [95% CI], p | (with the seeds a > b for the first metric)."""
    keys = [(k, t) for k, t in PAIR_METRICS if any(k in p for p in entries)]
    lines = ["| a | b | " + " | ".join(f"{t}: a - b [95% CI], p" for _, t in keys)
             + (f" | seeds a > b ({keys[0][1]}) |" if keys else " |"),
             "| --- | --- |" + " --- |" * (len(keys) + bool(keys))]
    for p in entries:
        cells = []
        for k, _ in keys:
            c = p.get(k)
            cells.append("n/a" if c is None else
                         f"{c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], {c['p_sign_flip']:.3f}")
        if keys:
            first = p.get(keys[0][0])
            cells.append("n/a" if first is None else f"{first['wins']}/{first['n']}")
        lines.append(f"| {p['a']} | {p['b']} | " + " | ".join(cells) + " |")
    return lines


def _samples_per_run(ms: dict) -> list[str]:
    """Steps and generated training samples of every run (one cell per seed)."""
    counted = {n: m for n, m in ms.items() if "samples_generated_total" in m["mean"]}
    if not counted:
        return []
    seeds = sorted({s for m in counted.values() for s in m["seeds"]})
    lines = ["", "## Generated samples per run", "",
             "Every response sampled for training (dynamic sampling's extra rounds included; evaluation and held-out "
             "sampling excluded): steps trained / samples generated, per seed.", "",
             "| method | " + " | ".join(f"seed {s}" for s in seeds) + " |", "| --- |" + " --- |" * len(seeds)]
    for name, m in counted.items():
        cells = []
        for s in seeds:
            v = m["per_seed"].get(s, {})
            cells.append(f"{v['steps']} / {v['samples_generated_total']:,}" if "samples_generated_total" in v else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _groups_help() -> str:
    """The groups of every preset with their help, for --help's epilog (read from the preset files)."""
    lines = []
    for preset, path in sorted(PRESETS.items()):
        try:
            cc = load_compare_config(path)
        except ConfigError as e:  # --help still works with a broken preset
            lines.append(f"  {preset}: cannot read {path.name}: {e}")
            continue
        for name, grp in cc.groups.items():
            lines.append(f"  --preset {preset} --group {name}")
            lines.append(textwrap.fill(grp.help, width=100, initial_indent="      ", subsequent_indent="      "))
            width = max(map(len, grp.methods))
            for method, overrides in grp.methods.items():
                lines.append(f"        {method:<{width}}  {' '.join(flatten(overrides))}")
    return "\n".join(lines) if lines else "  (no preset defines groups)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m apmpo_openrlhf.compare",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train GRPO, DAPO, GMPO and APMPO (with --ablations, GRPO+FAC and GRPO+PMPO; with --baselines,\n"
        "GSPO, Dr. GRPO and CISPO; with --group NAME, a study such as DAPO's parts or a compute-matched\n"
        "comparison) on a local task, several seeds in parallel (each run: python -m apmpo_openrlhf.train),\n"
        "and write into the output\n"
        "directory: figure1.png (training reward, token entropy, p, eps_high, clip fractions, time per step;\n"
        "mean and 95% t-band over seeds), adaptive.png (p, eps_high), heldout.png (held-out Pass@k, when the\n"
        "runs evaluate held-out problems), summary.md (mean ± std per method, paired significance per pair:\n"
        "bootstrap CI over seeds and the exact sign-flip test) and results.json (every per-seed number).\n"
        "Finished runs are skipped, so an interrupted comparison resumes.",
        epilog="presets:\n"
        "  toy      configs/local/compare.yaml: the embedded default task (one-digit + and -); every method\n"
        "           reaches ~0.98 and the methods are hard to tell apart\n"
        "  testbed  configs/local/compare_testbed.yaml on configs/local/testbed.yaml: two-digit addition graded\n"
        "           exactly, 20% of the problems held out, supervised warm start to 0.25, 400 steps, 6 seeds\n"
        "           (docs/local.md, 'A testbed where the methods differ')\n"
        "  backends configs/local/compare_backends.yaml on configs/local/openrlhf_cpu.yaml (APMPO and GRPO), for\n"
        "           --backends local,openrlhf: the same task, model, optimiser and seeds on both backends\n"
        "           (docs/openrlhf.md, 'Do the backends agree?'; benchmarks/backend_agreement.py)\n\n"
        "groups (--group NAME; also ablations, baselines, all):\n" + _groups_help() + "\n\n"
        "examples:\n"
        "  python -m apmpo_openrlhf.compare --preset testbed --ablations\n"
        "  python -m apmpo_openrlhf.compare --preset testbed --group dapo_parts --group compute_matched\n"
        "  python -m apmpo_openrlhf.compare --preset testbed --group all        # every method of the preset\n"
        "  python -m apmpo_openrlhf.compare --preset testbed --methods gspo,drgrpo,cispo\n"
        "  python -m apmpo_openrlhf.compare --preset testbed --seeds 0 1 --set max_steps=50 --output-dir /tmp/tb\n"
        "  python -m apmpo_openrlhf.compare --preset testbed --plots-only   # redraw from finished runs\n"
        "  python -m apmpo_openrlhf.compare --preset backends --backends local,openrlhf --seeds 0 1",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="named compare config (default: toy, unless --config is given)")
    p.add_argument("--config", type=Path, default=None,
                   help=f"compare config file; overrides --preset (default: {DEFAULT_COMPARE.relative_to(REPO_ROOT)})")
    p.add_argument("--ablations", action="store_true",
                   help="also run the config's ablations (testbed: grpo_fac = APMPO with p fixed at 1, i.e. GRPO + "
                   "adaptive eps_high; grpo_pmpo = APMPO with eps_high fixed at 0.2, i.e. GRPO + adaptive p; the "
                   "keys of configs/ablations/table6_components)")
    p.add_argument("--baselines", action="store_true",
                   help="also run the config's further baselines: gspo (GSPO, sequence-level ratio and clip), drgrpo "
                   "(Dr. GRPO, no std, constant token normaliser), cispo (CISPO, clipped detached IS weight)")
    p.add_argument("--group", dest="groups", action="append", default=[], metavar="NAME",
                   help="also run a study of the config's groups: (repeatable; listed below with what each studies), "
                   "'ablations' or 'baselines' (as the flags), or 'all' (every method of the config); summary.md "
                   "lists the group's own comparisons first and figure1_NAME.png / heldout_NAME.png draw them")
    p.add_argument("--methods", nargs="+", default=None,
                   help="subset of the config's methods, ablations, baselines and group methods, space or comma "
                   "separated (e.g. --methods gspo,drgrpo,cispo; default: all methods, plus the ablations with "
                   "--ablations, the baselines with --baselines and each --group's methods)")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default: the config's)")
    p.add_argument("--workers", type=int, default=None,
                   help="training processes at a time, one thread each (default: config, else CPU cores)")
    p.add_argument("--output-dir", default=None,
                   help="where runs (<dir>/<method>/seed_<s>), plots, summary.md and results.json go "
                   "(default: the config's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="training-config override for every run, repeatable (e.g. --set max_steps=300); shared by "
                   "all methods, so it cannot tune one method alone")
    p.add_argument("--plots-only", action="store_true", help="do not train; redraw from existing runs")
    p.add_argument("--backends", default=None, metavar="LIST",
                   help="comma-separated backends (local,openrlhf): run every method and seed on each, labelled "
                   "method@backend, with the paired statistics between them (the base config must run on both: "
                   "--preset backends); default: the base config's backend. Runs with openrlhf go one at a time "
                   "unless --workers says otherwise")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config_path = args.config or PRESETS[args.preset or "toy"]
    try:
        cc = load_compare_config(config_path)
        if args.output_dir is not None:
            cc.output_dir = args.output_dir
        table = all_methods(cc)
        extra = [m for g in args.groups for m in group_methods(cc, g)]
        methods = [m for item in args.methods for m in item.split(",") if m] if args.methods else list(dict.fromkeys([
            *cc.methods, *(cc.ablations if args.ablations else []), *(cc.baselines if args.baselines else []), *extra]))
        unknown = [m for m in methods if m not in table]
        if unknown:
            raise ConfigError(f"--methods: {unknown} not in the compare config (known: {list(table)})")
        if args.ablations and not cc.ablations:
            raise ConfigError(f"--ablations: {config_path} defines no ablations")
        if args.baselines and not cc.baselines:
            raise ConfigError(f"--baselines: {config_path} defines no baselines")
        if args.workers is not None and args.workers < 1:
            raise ConfigError(f"--workers={args.workers}: must be >= 1")
        backends = None
        if args.backends is not None:
            backends = [b.strip() for b in args.backends.split(",") if b.strip()]
            bad = [b for b in backends if b not in BACKENDS]
            if bad or not backends or len(set(backends)) != len(backends):
                raise ConfigError(f"--backends={args.backends!r}: a comma-separated list of distinct {list(BACKENDS)}")
        runs = plan_runs(cc, config_path, methods, args.seeds or cc.seeds, args.overrides, backends)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failures = []
    t0 = time.perf_counter()
    # an OpenRLHF run starts Ray, vLLM and DeepSpeed processes of its own: one at a time by default
    default_workers = 1 if any(r["backend"] == "openrlhf" for r in runs) else (os.cpu_count() or 1)
    workers = args.workers or cc.workers or default_workers
    if not args.plots_only:
        failures = execute(runs, workers)
    wall_s = time.perf_counter() - t0
    details = collect_runs(runs)
    by_method = {m: [r["rows"] for r in rs] for m, rs in details.items()}
    if not by_method:
        print("error: no finished runs to plot", file=sys.stderr)
        return 1
    out_dir = Path(cc.output_dir)
    written = plot(by_method, out_dir, cc.smooth, cc.title, details)
    # the groups asked for (or, with --methods, every group with a method in the run) get their own figures
    chosen = {g for g in args.groups if g in cc.groups} if args.groups and "all" not in args.groups else set(cc.groups)
    groups = {g: grp for g, grp in cc.groups.items() if g in chosen and any(m in details for m in grp.methods)}
    for g, grp in groups.items():
        members = [m for m in group_members(grp) if m in details]
        written += plot({m: by_method[m] for m in members}, out_dir, cc.smooth, f"{cc.title}, {g}",
                        {m: details[m] for m in members}, suffix=f"_{g}")
    analysis = analyse(details, groups)
    text = summary(by_method, cc.smooth) + summary_testbed(analysis)
    (out_dir / "summary.md").write_text(text)
    results = {"config": str(config_path), "methods_run": methods, "groups": args.groups, "seeds": args.seeds or cc.seeds,
               "workers": workers, "cpu_count": os.cpu_count(), "this_invocation_wall_s": wall_s,
               "plots_only": args.plots_only, "overrides": args.overrides, **analysis}
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=float) + "\n")
    written += [out_dir / "summary.md", out_dir / "results.json"]
    print(text)
    print("wrote: " + ", ".join(str(p) for p in written))
    for f in failures:
        print(f"failed: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
