"""Do the two backends train the same way? APMPO and GRPO on both, same config, seed by seed.

Runs `python -m apmpo_openrlhf.compare --preset backends --backends local,openrlhf` (configs/local/
compare_backends.yaml on configs/local/openrlhf_cpu.yaml: the same task, tiny-model initialisation,
optimiser, schedule and seeds; only `backend` differs), then

* plots reward, p and eps_high per backend (mean over seeds, 95% t-band) -> `<out>/agreement.png`
  (and `--figure`, e.g. docs/img/backend_agreement.png);
* tests per method whether the backends differ, pairing the runs of one seed (same base model):
  paired bootstrap CI and the exact sign-flip test (apmpo_openrlhf/stats.py) of the reward over the
  first and last 10% of steps and over the whole run, and of the mean p and eps_high of the run;
* checks what must be identical on both (not noise): optimizer steps per step and the learning-rate
  schedule;
* writes `<out>/agreement.md` and `<out>/agreement.json` and prints the Markdown.

vLLM and transformers sample differently, so single runs differ; the question is whether the
distributions over seeds do. Finished runs are reused (the comparison resumes), and so are the
runs of `benchmarks/openrlhf_seeds.py` (`--reuse apmpo@openrlhf=outputs/openrlhf-seeds`: linked in
where their saved config equals the planned one up to the run's name and folder).

    python benchmarks/backend_agreement.py                              # 6 seeds, ~1 h on 2 cores
    python benchmarks/backend_agreement.py --seeds 0 1 --set max_steps=20 --out /tmp/agree
    python benchmarks/backend_agreement.py --seeds 0 1 2 3 4 5 6 7 8 9 --methods apmpo \
        --reuse apmpo@openrlhf=outputs/openrlhf-seeds          # the seed table's runs are the OpenRLHF half
    python benchmarks/backend_agreement.py --plots-only --figure docs/img/backend_agreement.png
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from apmpo_openrlhf import compare  # noqa: E402
from apmpo_openrlhf.local.metrics import moving_average  # noqa: E402
from apmpo_openrlhf.stats import compare_pair, min_sign_flip_p, t_interval  # noqa: E402

BACKENDS = ("local", "openrlhf")
SIGNIFICANCE = 0.05


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(values) if values else math.nan


def run_scalars(rows: list[dict]) -> dict[str, float]:
    n = len(rows)
    k = max(1, round(0.1 * n))
    reward = [r["reward_mean"] for r in rows]
    return {
        "reward_first10": _mean(reward[:k]),
        "reward_last10": _mean(reward[-k:]),
        "reward_run": _mean(reward),
        "p_run": _mean(r.get("p") for r in rows),
        "eps_high_run": _mean(r.get("eps_high") for r in rows),
    }


SCALARS = [("reward_first10", "reward, first 10% of steps"), ("reward_last10", "reward, last 10% of steps"),
           ("reward_run", "reward, whole run"), ("p_run", "p, mean over the run"),
           ("eps_high_run", "eps_high, mean over the run")]


def mechanics(local: list[dict], openrlhf: list[dict]) -> dict[str, float]:
    """Quantities that depend on the config only: equal on both backends up to float rounding."""
    n = min(len(local), len(openrlhf))
    lr = [abs(a["lr"] - b["lr"]) / max(abs(a["lr"]), 1e-12) for a, b in zip(local[:n], openrlhf[:n])
          if "lr" in a and "lr" in b]
    steps = [(a.get("optimizer_steps"), b.get("optimizer_steps")) for a, b in zip(local[:n], openrlhf[:n])]
    groups = [(a.get("rollout/kept_num_groups"), b.get("rollout/kept_num_groups")) for a, b in zip(local[:n], openrlhf[:n])]
    return {"lr_max_rel_diff": max(lr) if lr else math.nan,
            "optimizer_steps_equal": all(a == b for a, b in steps),
            "optimizer_steps_local": _mean(a for a, _ in steps), "optimizer_steps_openrlhf": _mean(b for _, b in steps),
            "groups_equal": all(a == b for a, b in groups), "groups_openrlhf": _mean(b for _, b in groups)}


def analyse(details: dict[str, list[dict]], methods: list[str]) -> dict:
    out = {}
    for method in methods:
        by_backend = {b: {r["seed"]: r["rows"] for r in details.get(f"{method}@{b}", [])} for b in BACKENDS}
        seeds = sorted(set(by_backend["local"]) & set(by_backend["openrlhf"]))
        if not seeds:
            continue
        scal = {b: {s: run_scalars(by_backend[b][s]) for s in seeds} for b in BACKENDS}
        entry = {"seeds": seeds, "per_seed": scal, "tests": {}, "mechanics": {}}
        for key, _ in SCALARS:
            a = [scal["openrlhf"][s][key] for s in seeds]
            b = [scal["local"][s][key] for s in seeds]
            if any(math.isnan(x) for x in a + b):
                continue
            entry["tests"][key] = {**compare_pair(a, b), "mean_openrlhf": _mean(a), "mean_local": _mean(b)}
        entry["mechanics"] = {s: mechanics(by_backend["local"][s], by_backend["openrlhf"][s]) for s in seeds}
        out[method] = entry
    return out


def verdict(test: dict) -> str:
    excludes_0 = test["ci_low"] > 0 or test["ci_high"] < 0
    if test["ci_low"] == test["ci_high"] == 0:
        return "identical (a fixed value)"
    if test["p_sign_flip"] < SIGNIFICANCE and excludes_0:
        return "**differ** (p < 0.05)"
    return "no difference detected"


def markdown(analysis: dict) -> str:
    lines = []
    for method, entry in analysis.items():
        n = len(entry["seeds"])
        lines += [f"### {method} ({n} seeds: {', '.join(map(str, entry['seeds']))})", "",
                  "| metric | openrlhf | local | openrlhf - local [95% bootstrap CI] | sign-flip p | openrlhf higher | verdict |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for key, title in SCALARS:
            t = entry["tests"].get(key)
            if t is None:
                continue
            lines.append(f"| {title} | {t['mean_openrlhf']:.3f} | {t['mean_local']:.3f} | {t['mean_diff']:+.3f} "
                         f"[{t['ci_low']:+.3f}, {t['ci_high']:+.3f}] | {t['p_sign_flip']:.3f} | {t['wins']}/{t['n']} "
                         f"| {verdict(t)} |")
        mech = entry["mechanics"].values()
        lr = max(m["lr_max_rel_diff"] for m in mech)
        equal = all(m["optimizer_steps_equal"] for m in mech)
        steps = _mean(m["optimizer_steps_openrlhf"] for m in mech)
        groups_equal = all(m["groups_equal"] for m in mech)
        groups = _mean(m["groups_openrlhf"] for m in mech)
        same = {True: "equal", False: "**DIFFERENT**"}
        lines += ["", f"Same on both, every seed and step: prompt groups trained on {same[groups_equal]} "
                  f"({groups:.2f} per step); optimizer steps {same[equal]} ({steps:.2f} per step); learning rate "
                  f"after each step: largest relative difference {lr:.1e}.", ""]
    n = min((len(e["seeds"]) for e in analysis.values()), default=0)
    lines += [f"Paired over seeds (a seed's two runs share the base model); p: exact two-sided sign-flip test "
              f"(with {n} seeds its smallest possible value is {min_sign_flip_p(n):.4f}); a metric is called "
              f"different when p < {SIGNIFICANCE} and the CI excludes 0."]
    return "\n".join(lines) + "\n"


def plot(details: dict[str, list[dict]], methods: list[str], window: int, paths: list[Path]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("reward_mean", "training reward (every sampled group)", (0, 1)), ("p", "p (used by the loss)", (0, 1.05)),
            ("eps_high", "eps_high (used by the loss)", (0.15, 0.45))]
    fig, axes = plt.subplots(len(methods), len(keys), figsize=(15, 3.8 * len(methods)), squeeze=False)
    colors = {"local": "tab:blue", "openrlhf": "tab:red"}
    for i, method in enumerate(methods):
        for backend in BACKENDS:
            runs = [r["rows"] for r in details.get(f"{method}@{backend}", [])]
            if not runs:
                continue
            n = min(len(r) for r in runs)
            for j, (key, title, ylim) in enumerate(keys):
                curves = [moving_average([row.get(key, math.nan) for row in r[:n]], window) for r in runs]
                stats = [t_interval([c[t] for c in curves]) for t in range(n)]
                x = list(range(1, n + 1))
                m = [s[0] for s in stats]
                h = [0.0 if math.isnan(s[1]) else s[1] for s in stats]
                ax = axes[i][j]
                ax.plot(x, m, color=colors[backend], label=f"{backend} ({len(runs)} seeds)")
                ax.fill_between(x, [a - b for a, b in zip(m, h)], [a + b for a, b in zip(m, h)],
                                color=colors[backend], alpha=0.15)
                ax.set(title=f"{method}: {title}", xlabel="step", ylim=ylim)
        axes[i][0].legend(fontsize=8)
    fig.suptitle(f"Same config on both backends: mean over seeds, shaded = 95% t-interval over seeds "
                 f"({window}-step moving average)", fontsize=10)
    fig.tight_layout()
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
    plt.close(fig)


def reuse_runs(runs: list[dict], label: str, source: Path) -> list[str]:
    """Link ``source/seed<N>`` (benchmarks/openrlhf_seeds.py's layout) in as the ``label`` run of seed N
    where it finished and its saved train_config.yaml is the config this comparison would run, up to
    the run's name and folder. Returns one line per seed: linked, or why not."""
    import yaml

    from apmpo_openrlhf.config import load_config
    from apmpo_openrlhf.openrlhf_adapter.synthetic_inputs import with_synthetic_inputs

    notes = []
    for run in runs:
        src = (source / f"seed{run['seed']}").resolve()
        if run["method"] != label or run["out"].exists() or not (src / "summary.json").is_file():
            continue
        saved = yaml.safe_load((src / "train_config.yaml").read_text())
        sets = [s for s in run["sets"] if not s.startswith(("output_dir=", "name="))]
        # The folder as the seed run saved it (relative or absolute): the inputs it built live under it.
        planned = load_config(run["base"], [*sets, f"output_dir={saved['output_dir']}", f"name={saved['name']}"])
        planned = with_synthetic_inputs(planned, create=False).model_dump(mode="json")
        diff = sorted(k for k in set(saved) | set(planned) if saved.get(k) != planned.get(k))
        if diff:
            notes.append(f"{label} seed {run['seed']}: not reused, {src} differs in {', '.join(diff)}")
            continue
        run["out"].parent.mkdir(parents=True, exist_ok=True)
        run["out"].symlink_to(src, target_is_directory=True)
        notes.append(f"{label} seed {run['seed']}: reused {src}")
    return notes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the preset's, 0-5)")
    ap.add_argument("--methods", nargs="+", default=["apmpo", "grpo"], help="methods of the preset (default: both)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="training-config override for every run, repeatable")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "backend-agreement", help="output folder")
    ap.add_argument("--figure", type=Path, default=None, help="also save the figure here (e.g. docs/img/...png)")
    ap.add_argument("--plots-only", action="store_true", help="do not train; analyse existing runs")
    ap.add_argument("--reuse", action="append", default=[], metavar="METHOD@BACKEND=DIR",
                    help="take the finished runs of METHOD@BACKEND from DIR/seed<N> (benchmarks/openrlhf_seeds.py's "
                         "folders) instead of training them, where their saved config is the planned one up to the "
                         "name and folder (e.g. apmpo@openrlhf=outputs/openrlhf-seeds); repeatable")
    ap.add_argument("--workers", type=int, default=None, help="runs at a time (default: 1 with OpenRLHF runs)")
    args = ap.parse_args()

    argv = ["--preset", "backends", "--backends", ",".join(BACKENDS), "--output-dir", str(args.out),
            "--methods", *args.methods]
    if args.seeds:
        argv += ["--seeds", *map(str, args.seeds)]
    for o in args.overrides:
        argv += ["--set", o]
    if args.workers:
        argv += ["--workers", str(args.workers)]
    if args.plots_only:
        argv.append("--plots-only")
    cc = compare.load_compare_config(compare.PRESETS["backends"])
    cc.output_dir = str(args.out)
    runs = compare.plan_runs(cc, compare.PRESETS["backends"], args.methods, args.seeds or cc.seeds,
                             args.overrides, list(BACKENDS))
    for spec in args.reuse:
        label, sep, folder = spec.partition("=")
        if not sep or label not in {r["method"] for r in runs}:
            ap.error(f"--reuse {spec!r}: expected METHOD@BACKEND=DIR with METHOD@BACKEND one of this comparison's runs")
        for note in reuse_runs(runs, label, Path(folder)):
            print(note, file=sys.stderr)

    code = compare.main(argv)  # trains what is missing, draws compare's own panels too
    details = compare.collect_runs(runs)
    analysis = analyse(details, args.methods)
    figures = [args.out / "agreement.png"] + ([args.figure] if args.figure else [])
    plot(details, args.methods, cc.smooth, figures)
    text = markdown(analysis)
    (args.out / "agreement.md").write_text(text)
    (args.out / "agreement.json").write_text(json.dumps(analysis, indent=1, default=float) + "\n")
    print(text)
    print("wrote: " + ", ".join(str(p) for p in [*figures, args.out / "agreement.md", args.out / "agreement.json"]))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
