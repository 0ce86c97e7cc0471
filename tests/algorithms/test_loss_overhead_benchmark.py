"""The loss benchmark runs end to end on a small shape (it asserts its report, never its timings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "loss_overhead.py"


def test_benchmark_runs_and_reports_every_loss():
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--num-sequences", "8", "--seq-len", "64", "--repeats", "2",
         "--warmup", "1", "--no-compile", "--no-model"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    rows = [line.split() for line in out.splitlines() if line.startswith("eager ")]
    assert [r[1] for r in rows] == ["grpo", "dapo", "gmpo", "apmpo"]
    assert rows[0][3] == "1.00"  # grpo is its own reference
    assert "targets (eager): apmpo time" in out
    assert "MiB" in out


def test_benchmark_rejects_unknown_loss_names():
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--losses", "grpo,ppo", "--no-model"],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 2
    assert "--losses" in res.stderr and "ppo" in res.stderr
