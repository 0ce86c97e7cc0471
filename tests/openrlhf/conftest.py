"""Helpers for the OpenRLHF-backend tests: real OpenRLHF args (from its own parser) and rollouts
built the way OpenRLHF's SamplesGenerator builds them (one single-sample Experience per response)."""

from __future__ import annotations

import os
from pathlib import Path

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
