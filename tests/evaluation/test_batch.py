"""Batch scripts: every checkpoint of a run, every run of an experiment, then the report."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from apmpo_openrlhf.config import TRAIN_CONFIG_FILE, load_config, save_config
from evaluation.batch import final_model, find_model_dirs

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = REPO_ROOT / "evaluation" / "scripts"


def make_training_run(root: Path, model_src: Path, method: str, seed: int, steps=(1, 2), final=True) -> Path:
    """A training output_dir as the trainers lay it out, with its resolved config."""
    root.mkdir(parents=True)
    save_config(load_config(None, [f"name={root.name}", f"seed={seed}", f"algorithm.loss={method}",
                                   "model.path=/models/Tiny-Instruct"]), root / TRAIN_CONFIG_FILE)
    for step in steps:
        shutil.copytree(model_src, root / "checkpoints" / f"global_step{step}_hf")
    (root / "checkpoints" / "global_step9").mkdir(parents=True)  # a DeepSpeed state folder: not a model
    if final:
        shutil.copytree(model_src, root / "final_model")
    (root / "tensorboard").mkdir()
    return root


def test_model_discovery_orders_by_step(bigram_model_dir, tmp_path):
    run = make_training_run(tmp_path / "r", bigram_model_dir, "apmpo", 0, steps=(10, 2, 100))
    names = [d.relative_to(run).as_posix() for d in find_model_dirs(run)]
    assert names == ["checkpoints/global_step2_hf", "checkpoints/global_step10_hf", "checkpoints/global_step100_hf",
                     "final_model"]
    assert final_model(run) == run / "final_model"
    no_final = make_training_run(tmp_path / "n", bigram_model_dir, "grpo", 1, steps=(5, 40), final=False)
    assert final_model(no_final) == no_final / "checkpoints" / "global_step40_hf"


def _env():
    return dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")


RUN_OPTS = ["--backend", "hf", "--benchmarks", "geometry3k", "--limit", "2", "--n", "2", "--max-tokens", "16"]


@pytest.mark.slow
def test_experiment_and_checkpoint_scripts(bigram_model_dir, tmp_path, data_dir):
    exp = tmp_path / "exp"
    make_training_run(exp / "grpo_seed0", bigram_model_dir, "grpo", 0, steps=())
    make_training_run(exp / "apmpo_seed0", bigram_model_dir, "apmpo", 0, steps=())
    (exp / "notes").mkdir()  # no model in it: skipped
    res = tmp_path / "res"
    proc = subprocess.run(["bash", str(SCRIPTS / "eval_experiment.sh"), str(exp), str(res), "-", *RUN_OPTS],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in res.iterdir()) == ["apmpo_seed0", "grpo_seed0", "report.csv", "report.json",
                                                     "report.md"]
    md = (res / "report.md").read_text()
    assert "| Method | Geometry3K | Spider | BIRD |" in md
    assert "| **Tiny-Instruct** |" in md  # model name from the training config
    assert "GRPO seed=0 (grpo_seed0)" in md and "APMPO seed=0 (apmpo_seed0)" in md
    assert "skipping" in proc.stderr and "notes" in proc.stderr

    ckpts = tmp_path / "ck"
    run = make_training_run(tmp_path / "run", bigram_model_dir, "dapo", 2, steps=(3,))
    proc = subprocess.run(["bash", str(SCRIPTS / "eval_checkpoints.sh"), str(run), str(ckpts), *RUN_OPTS],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (ckpts / "checkpoints__global_step3_hf" / "geometry3k" / "metrics.json").is_file()
    assert (ckpts / "final_model" / "geometry3k" / "metrics.json").is_file()
    md = (ckpts / "report.md").read_text()
    assert "DAPO @step3 seed=2" in md and "DAPO seed=2 (final_model)" in md


def test_script_usage_errors(tmp_path):
    proc = subprocess.run(["bash", str(SCRIPTS / "eval_checkpoints.sh")], env=_env(), capture_output=True, text=True)
    assert proc.returncode == 2 and "usage" in proc.stderr
    proc = subprocess.run(["bash", str(SCRIPTS / "eval_checkpoints.sh"), str(tmp_path), str(tmp_path / "o")],
                          env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no model folder" in proc.stderr
