"""Small configs of the local backend for fast tests (a few steps of a tiny model on the CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from apmpo_openrlhf.config import load_config

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "local" / "default.yaml"

# 8 prompts x 8 samples = 64 per rollout (enough for nonzero advantages), 2 optimizer steps of 32,
# 2 micro-batches of 16 each.
SMALL = [
    "max_steps=3",
    "rollout.prompts_per_step=8",
    "rollout.n_samples_per_prompt=8",
    "train.train_batch_size=32",
    "train.micro_batch_size=16",
    "local.tiny_model.hidden_size=32",
    "local.tiny_model.intermediate_size=64",
    "local.num_threads=1",
    "local.progress_bar=false",
    "logging.tensorboard=false",
    "checkpoint.save_steps=1",
    "algorithm.kl_beta=0.001",  # default.yaml turns KL off; the small tests exercise the reference model
    "train.lr_schedule=constant",  # default.yaml decays over max_steps; the resume tests change max_steps
]


@pytest.fixture
def default_config() -> Path:
    return DEFAULT_CONFIG


@pytest.fixture
def small_overrides() -> list[str]:
    return list(SMALL)


@pytest.fixture
def small_config(tmp_path):
    """small_config(*overrides, name="run") -> TrainConfig writing into tmp_path/name."""

    def make(*overrides: str, name: str = "run"):
        return load_config(DEFAULT_CONFIG, [*SMALL, f"output_dir={tmp_path / name}", *overrides])

    return make
