"""Held-out Pass@k of finished testbed runs at chosen steps, paired by seed (docs/local.md, "What carries
DAPO's lead").

A run's held-out evaluation at step S (``heldout.jsonl``, every ``local.heldout_eval.every_steps``) samples
with an RNG seeded by the run seed and S only, and training is deterministic on one machine, so the
evaluation of a 400-step run at step 200 is the final evaluation of the same run stopped at step 200 (for
instance by ``local.max_generated_samples``). This reads those evaluations to compare methods at equal
generated samples or along longer training, without training the prefixes again:

    python benchmarks/testbed_at_step.py --dir outputs/compare-testbed-r2 \
        --pair dapo@200 grpo@400 --pair grpo_ds@200 grpo@400
    python benchmarks/testbed_at_step.py --dir outputs/compare-testbed-plateau --curves grpo dapo dapo_no_ds \
        --plot docs/img/testbed_plateau.png

Prints, per ``method@step``: the samples generated up to that step and held-out Pass@1 / Pass@n (n samples per problem; mean ±
sample std over seeds); per ``--pair``: the paired difference, its bootstrap 95 % CI and the exact
sign-flip p (apmpo_openrlhf.stats, as compare's summary); per ``--curves`` method: held-out Pass@1 and the
mean training reward of the last 100 steps at every evaluated step, per seed.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apmpo_openrlhf.stats import compare_pair  # noqa: E402


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def seeds_of(root: Path, method: str) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in (root / method).glob("seed_*") if (p / "heldout.jsonl").exists())


def at_step(root: Path, method: str, seed: int, step: int) -> dict | None:
    """Held-out Pass@1 / Pass@n and samples generated of one run at ``step`` (None: not evaluated there)."""
    run = root / method / f"seed_{seed}"
    evals = {r["step"]: r for r in _jsonl(run / "heldout.jsonl")}
    rows = {r["step"]: r for r in _jsonl(run / "metrics.jsonl")}
    if step not in evals or (step and step not in rows):
        return None
    e = evals[step]
    return {"pass@1": e["pass_at_k"]["1"], "pass@n": e["pass_at_k"][str(e["n_samples"])],
            "samples": rows[step]["samples_generated_total"] if step else 0}


def _ms(values: list[float], digits: int = 3) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {sd:.{digits}f}"


def _spec(text: str) -> tuple[str, int]:
    method, _, step = text.partition("@")
    if not step.isdigit():
        raise SystemExit(f"--pair: {text!r} is not METHOD@STEP (e.g. dapo@200)")
    return method, int(step)


def pairs(root: Path, specs: list[list[str]]) -> None:
    points = list(dict.fromkeys(_spec(s) for pair in specs for s in pair))
    print("| method @ step | seeds | samples generated | held-out Pass@1 | held-out Pass@n (n = 16 on the testbed) |")
    print("| --- | --- | --- | --- | --- |")
    values = {}
    for method, step in points:
        per = {s: v for s in seeds_of(root, method) if (v := at_step(root, method, s, step)) is not None}
        values[(method, step)] = per
        if not per:
            print(f"| {method} @ {step} | 0 | - | - | - |")
            continue
        samples = sorted({v["samples"] for v in per.values()})
        print(f"| {method} @ {step} | {len(per)} | {', '.join(f'{x:,}' for x in samples)} "
              f"| {_ms([v['pass@1'] for v in per.values()])} | {_ms([v['pass@n'] for v in per.values()])} |")
    print()
    print("| a | b | seeds | Pass@1: a - b [95% CI], p | seeds a > b | Pass@n: a - b [95% CI], p |")
    print("| --- | --- | --- | --- | --- | --- |")
    for a_text, b_text in specs:
        a, b = values[_spec(a_text)], values[_spec(b_text)]
        seeds = sorted(set(a) & set(b))
        if not seeds:
            print(f"| {a_text} | {b_text} | 0 | n/a | n/a | n/a |")
            continue
        cells = []
        for key in ("pass@1", "pass@n"):
            c = compare_pair([a[s][key] for s in seeds], [b[s][key] for s in seeds])
            cells.append((f"{c['mean_diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}], {c['p_sign_flip']:.3f}",
                          f"{c['wins']}/{c['n']}"))
        print(f"| {a_text} | {b_text} | {len(seeds)} | {cells[0][0]} | {cells[0][1]} | {cells[1][0]} |")


def curves(root: Path, methods: list[str], plot: Path | None) -> None:
    data = {}
    for method in methods:
        for seed in seeds_of(root, method):
            run = root / method / f"seed_{seed}"
            rows = _jsonl(run / "metrics.jsonl")
            reward = {r["step"]: r["reward_mean"] for r in rows}
            pts = []
            for e in _jsonl(run / "heldout.jsonl"):
                s = e["step"]
                window = [reward[t] for t in range(max(1, s - 99), s + 1) if t in reward]
                pts.append((s, e["pass_at_k"]["1"], e["pass_at_k"][str(e["n_samples"])],
                            statistics.fmean(window) if window else float("nan")))
            data[(method, seed)] = pts
    print("| method | seed | held-out Pass@1 at steps 0, 100, 200, ... | training reward, mean of the 100 steps "
          "before each | Pass@n at the last step |")
    print("| --- | --- | --- | --- | --- |")
    for (method, seed), pts in data.items():
        print(f"| {method} | {seed} | {' '.join(f'{p[1]:.3f}' for p in pts)} "
              f"| {' '.join('-' if p[0] == 0 else f'{p[3]:.3f}' for p in pts)} | {pts[-1][2]:.3f} |")
    if plot is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = dict(zip(methods, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for (method, seed), pts in data.items():
        label = method if seed == min(s for m, s in data if m == method) else None
        x = [p[0] for p in pts]
        axes[0].plot(x, [p[1] for p in pts], "o-", color=colors[method], alpha=0.8, label=label, ms=3)
        axes[1].plot(x[1:], [p[3] for p in pts[1:]], "o-", color=colors[method], alpha=0.8, label=label, ms=3)
    axes[0].set(title="held-out Pass@1 (every 100 steps)", xlabel="step", ylabel="Pass@1")
    axes[1].set(title="training reward (mean of the previous 100 steps)", xlabel="step", ylabel="reward")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Testbed trained longer ({root.name}; one line per seed)")
    fig.tight_layout()
    plot.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot, dpi=110)
    print(f"\nwrote {plot}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, required=True, help="a compare output directory (<dir>/<method>/seed_<s>)")
    ap.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A@STEP", "B@STEP"),
                    help="compare method A at step STEP with method B at its step, paired by seed (repeatable)")
    ap.add_argument("--curves", nargs="+", default=[], metavar="METHOD",
                    help="print held-out Pass@1 and training reward at every evaluated step of these methods")
    ap.add_argument("--plot", type=Path, help="with --curves: draw them into this PNG")
    args = ap.parse_args(argv)
    if not (args.pair or args.curves):
        ap.error("give --pair and/or --curves")
    if args.pair:
        pairs(args.dir, args.pair)
    if args.curves:
        curves(args.dir, args.curves, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
