"""Math reward throughput: answers graded per second with N grader workers (default 2 = the
target machine's 2 cores), on typical answers and with pathological answers mixed in.

Typical answers: the MATH500 reference solutions graded against their own answer and against a
neighbour's answer (half correct, half wrong), as long reasoning texts ending in \\boxed{}.
Pathological: answers such as 9^{9^{9^{9}}} that hit the time limit. Target: >= 400 typical
answers/s on 2 cores. Also times the OpenRLHF call pattern (reward_func per sample from threads).

    python benchmarks/reward_throughput.py [--workers 2] [--n 2000] [--pathological-every 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PATHOLOGICAL = [
    "\\boxed{9^{9^{9^{9}}}}",
    "\\boxed{10^{10^{10^{10^{10}}}}!}",
    "\\boxed{" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "}",
    "x" * 100_000,
]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the given processes (Linux /proc), 0 for vanished ones."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (FileNotFoundError, IndexError, ValueError):
            pass
    return total


def typical_pairs(data_dir: Path | None, n: int) -> list[tuple[str, str]]:
    from apmpo_openrlhf.data.sources import load_math

    try:
        recs = list(load_math("math500", data_dir))
    except FileNotFoundError:
        print("MATH500 not found: using synthetic answers", file=sys.stderr)
        return [(f"Some reasoning... so the answer is \\boxed{{\\frac{{{i}}}{{7}}}}.", f"{i}/7" if i % 2 else "3")
                for i in range(n)]
    pairs = []
    for i, r in enumerate(recs):
        pairs.append((r["metadata"]["solution"], r["answer"]))
        pairs.append((r["metadata"]["solution"], recs[(i + 1) % len(recs)]["answer"]))
    return (pairs * (n // len(pairs) + 1))[:n]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="grader worker processes (default 2)")
    parser.add_argument("--n", type=int, default=2000, help="typical answers per measurement (default 2000)")
    parser.add_argument("--pathological-every", type=int, default=50,
                        help="in the worst-case run, one pathological answer per this many (default 50)")
    parser.add_argument("--data-dir", type=Path, default=None, help="benchmark data directory (default: $APMPO_DATA_DIR)")
    parser.add_argument("--threads", type=int, default=64, help="concurrent reward_func calls in the OpenRLHF pattern")
    args = parser.parse_args()
    os.environ["APMPO_GRADER_WORKERS"] = str(args.workers)

    from apmpo_openrlhf.rewards.grader_pool import default_pool
    from apmpo_openrlhf.rewards.math_grading import MATH_TIMEOUT_S, grade_math_batch

    load0 = os.getloadavg()[0]
    pairs = typical_pairs(args.data_dir, args.n)
    grade_math_batch(pairs[:200])  # warm up: worker imports, sympy caches

    pids = default_pool().alive_pids()
    cpu0, t0 = cpu_seconds(pids) + time.process_time(), time.perf_counter()
    grades = grade_math_batch(pairs)
    typical_s = time.perf_counter() - t0
    # CPU time of the workers and this process: what the work costs regardless of other load.
    typical_cpu = cpu_seconds(pids) + time.process_time() - cpu0
    dedicated_rate = len(pairs) / (typical_cpu / args.workers)
    typical_rate = len(pairs) / typical_s
    correct = sum(g.score for g in grades)

    mixed = []
    for i, p in enumerate(pairs):
        mixed.append(p)
        if (i + 1) % args.pathological_every == 0:
            mixed.append((PATHOLOGICAL[(i // args.pathological_every) % len(PATHOLOGICAL)], "1"))
    n_path = len(mixed) - len(pairs)
    t0 = time.perf_counter()
    mixed_grades = grade_math_batch(mixed)
    mixed_s = time.perf_counter() - t0
    reasons: dict[str, int] = {}
    for g, (resp, _) in zip(mixed_grades, mixed):
        if resp in PATHOLOGICAL:
            reasons[g.reason] = reasons.get(g.reason, 0) + 1

    # OpenRLHF pattern: reward_func once per sample, from many threads at once.
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "reward_func", Path(__file__).resolve().parents[1] / "apmpo_openrlhf/rewards/openrlhf_reward.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    labels = [json.dumps({"task": "math", "answer": g}) for _, g in pairs]

    async def run_threaded():
        sem = asyncio.Semaphore(args.threads)

        async def one(resp, lab):
            async with sem:
                return await asyncio.to_thread(module.reward_func, [resp], [""], [lab])

        return await asyncio.gather(*(one(r, lab) for (r, _), lab in zip(pairs, labels)))

    t0 = time.perf_counter()
    asyncio.run(run_threaded())
    threaded_rate = len(pairs) / (time.perf_counter() - t0)

    stats = default_pool().stats
    print(f"workers: {args.workers}   cpu_count: {os.cpu_count()}   load average at start: {load0:.1f}   "
          f"hard timeout: {MATH_TIMEOUT_S:g} s")
    print(f"typical answers:        {len(pairs)} graded in {typical_s:.2f} s = {typical_rate:.0f} answers/s "
          f"({correct:.0f} correct); target >= 400/s: {'met' if typical_rate >= 400 else 'NOT met'} "
          f"(ratio {typical_rate / 400:.2f})")
    print(f"  CPU cost: {typical_cpu:.2f} CPU-s = {1000 * typical_cpu / len(pairs):.2f} ms/answer -> "
          f"{dedicated_rate:.0f} answers/s on {args.workers} dedicated cores (ratio to target {dedicated_rate / 400:.2f})")
    print(f"with pathological:      {len(mixed)} graded ({n_path} pathological, 1 per {args.pathological_every}) "
          f"in {mixed_s:.2f} s = {len(mixed) / mixed_s:.0f} answers/s; "
          f"slowdown vs typical x{mixed_s / typical_s * len(pairs) / len(mixed):.2f}; pathological reasons {reasons}")
    print(f"OpenRLHF thread pattern: {threaded_rate:.0f} answers/s with {args.threads} threads "
          f"(ratio to batch API {threaded_rate / typical_rate:.2f})")
    print(f"pool stats: {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
