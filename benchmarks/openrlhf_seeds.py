"""The OpenRLHF backend's CPU demo over many seeds: does every seed meet issue #19's targets?

Runs `python -m apmpo_openrlhf.train --config configs/local/openrlhf_cpu.yaml` (plus any --set) for
each seed, one at a time (a run starts Ray, a vLLM engine and DeepSpeed processes of its own), then
prints one row per seed from its metrics.jsonl / eval.jsonl / summary.json: reward over the first and
last 10% of steps, the lowest 20-step moving average in the last 25%, eval reward at step 0 and at
the end, p and eps_high at the end, training time and the wall time of the whole command (start-up
included); then whether each target holds. Finished runs are reused (--fresh reruns them).

    python benchmarks/openrlhf_seeds.py                       # seeds 0-9 (~30-50 min on 2 cores)
    python benchmarks/openrlhf_seeds.py --seeds 0 1 --set train.lr=2e-3 --out outputs/openrlhf-seeds-lr2e-3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from apmpo_openrlhf.local.metrics import check_targets, read_metrics, reward_curve_stats  # noqa: E402

CONFIG = REPO_ROOT / "configs" / "local" / "openrlhf_cpu.yaml"
TARGETS = {"first": ("<=", 0.15), "last": (">=", 0.6), "wall_s": ("<=", 300.0)}


def run_seed(seed: int, out: Path, overrides: list[str], fresh: bool) -> dict:
    d = out / f"seed{seed}"
    if fresh and d.exists():
        shutil.rmtree(d)
    if not (d / "timing.json").exists():
        args = [sys.executable, "-m", "apmpo_openrlhf.train", "--config", str(CONFIG), "--set", f"seed={seed}",
                "--set", f"output_dir={d}", "--set", "local.progress_bar=false",
                *[a for o in overrides for a in ("--set", o)]]
        d.mkdir(parents=True, exist_ok=True)
        print(f"seed {seed} -> {d}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        with (d / "train.log").open("w") as f:
            code = subprocess.run(args, cwd=REPO_ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
        if code != 0:
            raise SystemExit(f"seed {seed} failed ({code}):\n{(d / 'train.log').read_text()[-3000:]}")
        (d / "timing.json").write_text(json.dumps({"wall_s": time.perf_counter() - t0,
                                                   "load_avg_1min": os.getloadavg()[0]}))
    timing = json.loads((d / "timing.json").read_text())
    rows = read_metrics(d / "metrics.jsonl")
    evals = read_metrics(d / "eval.jsonl")
    summary = json.loads((d / "summary.json").read_text())
    return {"seed": seed, **reward_curve_stats([r["reward_mean"] for r in rows]), **timing,
            "eval0": evals[0]["eval_reward_mean"], "eval_end": evals[-1]["eval_reward_mean"],
            "eval_end_step": evals[-1]["step"], "p": rows[-1]["p"], "eps_high": rows[-1]["eps_high"],
            "train_s": summary["train_s"]}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)), help="seeds to run (default 0-9)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="training-config override on top of the CPU demo config, repeatable")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "outputs" / "openrlhf-seeds", help="output folder")
    ap.add_argument("--fresh", action="store_true", help="delete and rerun runs that already finished")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    results = [run_seed(s, args.out, args.overrides, args.fresh) for s in args.seeds]

    print(f"OpenRLHF CPU demo, {len(results)} seeds, {cpu_name()}, {os.cpu_count()} cores; outputs in {args.out}")
    print("| seed | first 10% | last 10% | lowest 20-step mean, last 25% | eval step 0 | eval end | p end "
          "| eps_high end | training s | wall s (with start-up) | load avg |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['seed']} | {r['first']:.3f} | {r['last']:.3f} | {r['tail_min_smoothed']:.3f} | {r['eval0']:.2f} "
              f"| {r['eval_end']:.2f} | {r['p']:.3f} | {r['eps_high']:.3f} | {r['train_s']:.0f} | {r['wall_s']:.0f} "
              f"| {r['load_avg_1min']:.1f} |")
    ok, lines = check_targets(results, TARGETS)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
