"""Geometry3K with its diagrams through the harness's vLLM backend, with a tiny Qwen2.5-VL.

End to end as users run it (``python -m evaluation.run`` then ``python -m evaluation.report``, fresh
vLLM cache so vLLM's model inspection subprocess needs the torchvision stand-in too), and the
engine's log-probs on the harness's exact inputs against a Hugging Face forward with M-RoPE
positions (``mm_token_type_ids``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from evaluation.backends.vllm_backend import vllm_available
from evaluation.metrics import pass_at_k

REPO = Path(__file__).resolve().parents[2]
AGREEMENT = Path(__file__).resolve().parent / "vl_agreement.py"
LIMIT, N = 4, 8
PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(vllm_available() is not None and not os.environ.get("CI"),
                       reason=f"vLLM CPU build absent: {vllm_available()}"),
]


@pytest.fixture(scope="module")
def geometry3k(data_dir) -> Path:
    if not (data_dir / "geometry3k" / "test").is_dir():
        pytest.skip(f"Geometry3K test split is absent from the data directory ({data_dir / 'geometry3k' / 'test'})")
    return data_dir


@pytest.fixture(scope="module")
def tiny_vl_dir(tmp_path_factory) -> Path:
    """The tiny Qwen2.5-VL (models/tiny_vl.py), built in a fresh process (this one imported
    transformers before the torchvision stand-in could be on the path)."""
    from apmpo_openrlhf.models.tiny_vl import build_tiny_vl_model

    return build_tiny_vl_model(tmp_path_factory.mktemp("tiny_vl") / "model", max_position_embeddings=1024)


def test_vllm_backend_evaluates_geometry3k_with_images(run_cli, tiny_vl_dir, geometry3k, tmp_path):
    out = tmp_path / "run"
    args = ["--model", str(tiny_vl_dir), "--benchmarks", "geometry3k", "--n", str(N), "--limit", str(LIMIT),
            "--max-tokens", "4", "--seed", "3", "--backend", "vllm", "--enforce-eager", "--dtype", "float32",
            "--out", str(out), "--method", "apmpo", "--train-seed", "0", "--model-name", "tiny-qwen2.5-vl"]
    proc = run_cli("evaluation.run", *args, env_extra={"VLLM_CACHE_ROOT": str(tmp_path / "vllm_cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "geometry3k" / "metrics.json").read_text())["metrics"]
    assert metrics["images_used"] is True and metrics["num_problems"] == LIMIT and metrics["n_samples"] == N
    samples = [json.loads(line) for line in (out / "geometry3k" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == LIMIT * N
    assert all(s["prompt"].startswith(f"<|im_start|>user\n{PLACEHOLDER}") for s in samples)
    # the tiny model names one letter and ends its turn; graded by the choice reward, sample by sample
    assert sum(s["extracted_answer"] in ("A", "B", "C", "D") for s in samples) >= LIMIT * N // 2
    for s in samples:
        assert s["correct"] == (s["extracted_answer"] == s["gold"]), s
    assert sum(s["correct"] for s in samples) > 0
    assert metrics["pass@1"] == pytest.approx(sum(s["correct"] for s in samples) / len(samples))
    counts = Counter(s["problem_id"] for s in samples if s["correct"])
    for k in (2, 4, 8):
        assert metrics[f"pass@{k}"] == pytest.approx(sum(pass_at_k(N, counts[p], k) for p in {s["problem_id"] for s in samples}) / LIMIT)

    # the paper-style table: Table 5's Geometry3K column for this run
    report = run_cli("evaluation.report", str(out), "--format", "csv")
    assert report.returncode == 0, report.stderr[-2000:]
    rows = [r for r in csv.DictReader(io.StringIO(report.stdout)) if r["table"] == "table5" and r["kind"] == "run"]
    [row] = [r for r in rows if r["column"] == "geometry3k_pass@1"]
    assert row["method"] == "apmpo" and row["model"] == "tiny-qwen2.5-vl"
    assert float(row["mean"]) == pytest.approx(100 * metrics["pass@1"], abs=1e-3)
    markdown = run_cli("evaluation.report", str(out), "--format", "md")
    assert markdown.returncode == 0 and "Geometry3K" in markdown.stdout


def test_vllm_backend_agrees_with_hf_forward_on_image_prompts(tiny_vl_dir, geometry3k, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "VLLM_CACHE_ROOT": str(tmp_path / "vllm_cache")}
    proc = subprocess.run([sys.executable, str(AGREEMENT), str(tiny_vl_dir), str(geometry3k)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(n >= 9 for n in result["image_tokens"])  # each diagram is ~12 image tokens
    assert result["max_abs_diff"] < 1e-4  # float32 engine vs float32 transformers, M-RoPE on both sides
    # without mm_token_type_ids transformers silently uses 1-D positions: the check would see it
    assert result["max_abs_diff_without_mrope"] > 1e-2
