"""The embedded default, exactly as a user runs it: `python -m apmpo_openrlhf.train` learns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from apmpo_openrlhf.local.metrics import reward_curve_stats

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_STEPS = yaml.safe_load((REPO_ROOT / "configs" / "local" / "default.yaml").read_text())["max_steps"]


@pytest.mark.slow  # about 80 s on 2 cores
def test_default_run_reward_rises_from_low_to_high_and_stays_up(tmp_path):
    out = tmp_path / "default"
    proc = subprocess.run(
        [sys.executable, "-m", "apmpo_openrlhf.train", "--set", f"output_dir={out}", "--set", "local.progress_bar=false"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == MAX_STEPS
    s = reward_curve_stats([r["reward_mean"] for r in rows])
    # Targets with a margin that holds on any CPU (float rounding changes the trajectory): the
    # measured seeds 0-9 on AVX-512 and AVX2 kernels give first 10% <= 0.22, last 10% >= 0.93 and a
    # late 20-step mean >= 0.91 (docs/local.md); the targets are 0.3 / 0.9 / 0.75.
    assert s["first"] <= 0.3, s
    assert s["last"] >= 0.8, s
    assert s["tail_min_smoothed"] >= 0.65, s
    # APMPO adapted: p fell and eps_high rose with the reward (SPEC.md 3).
    assert rows[-1]["p"] < rows[0]["p"] and rows[-1]["eps_high"] > rows[0]["eps_high"]
    assert (out / "final_model" / "config.json").is_file()
    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == MAX_STEPS
    assert evals[-1]["eval_reward_mean"] > evals[0]["eval_reward_mean"] + 0.5
    # The one-glance summary at the end, and its machine-readable copy.
    summary = json.loads((out / "summary.json").read_text())
    assert summary["reward"]["last"] == pytest.approx(s["last"])
    assert summary["eval"][-1] == [MAX_STEPS, pytest.approx(evals[-1]["eval_reward_mean"])]
    for text in ("summary of", "train reward", "eval reward", "p ", "eps_high", "wall", str(out)):
        assert text in proc.stderr, text
