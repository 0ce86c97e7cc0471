"""The embedded default over many seeds: does every seed meet issue #9's targets?

Runs `python -m apmpo_openrlhf.train` (the default config, plus any --set) for each seed, `--workers`
at a time (one thread each), then prints one row per seed: reward over the first and last 10% of
steps, the lowest 20-step moving average in the last 25%, eval reward at step 0 and at the end, the
problems still wrong at the end (from the final eval), and CPU/wall time; then whether each target
holds. Finished runs are reused (rerun with --fresh to redo them).

    python benchmarks/default_seeds.py                        # seeds 0-9 of the default
    python benchmarks/default_seeds.py --cpu-isa avx2         # the same with PyTorch's AVX2 kernels
    python benchmarks/default_seeds.py --seeds 0 1 --set train.lr=3e-4 --out outputs/seeds-lr3e-4
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from apmpo_openrlhf.local.metrics import check_targets, read_metrics, reward_curve_stats  # noqa: E402

TARGETS = {"first": ("<=", 0.3), "last": (">=", 0.9), "tail_min_smoothed": (">=", 0.75), "cpu_s": ("<=", 180.0)}


def run_seed(seed: int, out: Path, overrides: list[str], env: dict, fresh: bool) -> dict:
    d = out / f"seed{seed}"
    done = d / "summary.json"
    if fresh and d.exists():
        shutil.rmtree(d)
    if not done.exists():
        args = [sys.executable, "-m", "apmpo_openrlhf.train", "--set", f"seed={seed}", "--set", f"output_dir={d}",
                "--set", "local.progress_bar=false", *[a for o in overrides for a in ("--set", o)]]
        d.mkdir(parents=True, exist_ok=True)
        log = d / "train.log"
        t0 = time.perf_counter()
        with log.open("w") as f:
            proc = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
            # wait4: this child's own CPU time (os.times() would mix in the other workers' children)
            _, status, usage = os.wait4(proc.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise SystemExit(f"seed {seed} failed ({code}):\n{log.read_text()[-3000:]}")
        timing = {"wall_s": time.perf_counter() - t0, "cpu_s": usage.ru_utime + usage.ru_stime}
        (d / "timing.json").write_text(json.dumps(timing))
    timing = json.loads((d / "timing.json").read_text())
    rows = read_metrics(d / "metrics.jsonl")
    evals = read_metrics(d / "eval.jsonl")
    stats = reward_curve_stats([r["reward_mean"] for r in rows])
    return {"seed": seed, **stats, "eval0": evals[0]["eval_reward_mean"], "eval_end": evals[-1]["eval_reward_mean"],
            "eval_end_step": evals[-1]["step"], **timing}


def wrong_at_end(out: Path, seed: int) -> str:
    """Problems the final policy answers correctly in fewer than half of 16 samples at the eval temperature."""
    d = out / f"seed{seed}"
    from apmpo_openrlhf.config import load_config
    from apmpo_openrlhf.local.trainer import Trainer

    cfg = load_config(d / "train_config.yaml", [f"output_dir={d}", "checkpoint.resume=true"])
    with contextlib.redirect_stderr(io.StringIO()):  # loading bars and the "already complete" note
        trainer = Trainer(cfg)
        trainer.maybe_resume()
    records = trainer.eval_prompts
    _, rewards = trainer.sample_and_grade(records, 16, cfg.eval.temperature, cfg.eval.top_p, seed=1234)
    rewards = rewards.view(len(records), 16).mean(-1)
    bad = [f"{records[i]['prompt']}{records[i]['label']['answer']} ({float(v):.2f})"
           for i, v in enumerate(rewards) if v < 0.5]
    return ", ".join(bad) or "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)), help="seeds to run (default 0-9)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="training-config override on top of the default, repeatable")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default outputs/default-seeds[-ISA])")
    ap.add_argument("--workers", type=int, default=2, help="runs at a time, one thread each (default 2)")
    ap.add_argument("--cpu-isa", choices=["native", "avx2", "default"], default="native",
                    help="PyTorch CPU kernels: native (the best this CPU has), avx2, or default (no vector ISA); "
                         "sets ATEN_CPU_CAPABILITY so one machine shows how another CPU's rounding changes the runs")
    ap.add_argument("--fresh", action="store_true", help="delete and rerun runs that already finished")
    args = ap.parse_args()

    out = args.out or REPO_ROOT / "outputs" / ("default-seeds" + ("" if args.cpu_isa == "native" else f"-{args.cpu_isa}"))
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.cpu_isa != "native":
        env["ATEN_CPU_CAPABILITY"] = args.cpu_isa
    with ThreadPoolExecutor(args.workers) as pool:
        results = list(pool.map(lambda s: run_seed(s, out, args.overrides, env, args.fresh), args.seeds))

    print(f"default run, {len(results)} seeds, kernels: {args.cpu_isa}, outputs in {out}")
    print("| seed | first 10% | last 10% | lowest 20-step mean, last 25% | eval step 0 | eval end | wrong at the end (16 samples) | CPU s | wall s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['seed']} | {r['first']:.3f} | {r['last']:.3f} | {r['tail_min_smoothed']:.3f} | {r['eval0']:.2f} "
              f"| {r['eval_end']:.2f} | {wrong_at_end(out, r['seed'])} | {r['cpu_s']:.0f} | {r['wall_s']:.0f} |")
    ok, lines = check_targets(results, TARGETS)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
