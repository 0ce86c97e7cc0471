"""GRPO and DAPO with the rollout correction equal OpenRLHF 0.11.2's own ``PolicyLoss`` with the same
``is_correction_*`` settings: loss values, gradients and the filter fraction, on random inputs.

OpenRLHF's class (openrlhf/models/loss.py) multiplies its per-token clipped surrogate by the
correction coefficient and aggregates it per sequence (GRPO: seq-mean-token-mean) or per token
(DAPO: token-mean) with the global counts; the core passes the same coefficients as ``is_weights``.
"""

from __future__ import annotations

import pytest
import torch

import apmpo_openrlhf.openrlhf_adapter  # noqa: F401  (the flash_attn stand-in OpenRLHF's import needs)
from apmpo_openrlhf.algorithms import dapo_loss, grpo_loss, rollout_correction_weights
from openrlhf.models.loss import PolicyLoss

F64 = torch.float64

SETTINGS = [
    ("token", "clip", "ratio", [0.5, 2.0]),  # TIS
    ("token", "mask", "ratio", [0.5, 2.0]),  # ICEPOP
    ("seq", "mask", "ratio", [0.8, 1.25]),  # sequence masking (geometric mean of the ratio)
    ("token", "mask", "binary_kl", [0.0, 0.02]),
    ("seq", "mask", "tv", [0.0, 0.1]),
]


def inputs(seed: int, n: int = 6, t: int = 11):
    g = torch.Generator().manual_seed(seed)
    old = -2.5 * torch.rand(n, t, generator=g, dtype=F64) - 0.05
    new = old + 0.3 * torch.randn(n, t, generator=g, dtype=F64)
    rollout = old + 0.6 * torch.randn(n, t, generator=g, dtype=F64)
    lengths = torch.randint(2, t + 1, (n,), generator=g)
    lengths[0] = t
    mask = torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)
    adv = torch.randn(n, generator=g, dtype=F64)
    return new, old, rollout, mask, adv


@pytest.mark.parametrize("setting", SETTINGS, ids=["-".join(map(str, s[:3])) for s in SETTINGS])
@pytest.mark.parametrize("loss", ["grpo", "dapo"])
@pytest.mark.parametrize("seed", range(2))
def test_grpo_and_dapo_with_the_correction_equal_openrlhfs_policy_loss(loss, setting, seed):
    new, old, rollout, mask, adv = inputs(3000 + seed + 10 * SETTINGS.index(setting))
    eps_low, eps_high = (0.2, 0.2) if loss == "grpo" else (0.2, 0.28)
    level, mode, gating, threshold = setting
    n, tokens = new.shape[0], int(mask.sum())

    theirs = PolicyLoss(clip_eps_low=eps_low, clip_eps_high=eps_high, token_level_loss=loss == "dapo",
                        is_correction_level=level, is_correction_mode=mode, is_correction_gating=gating,
                        is_correction_threshold=threshold)
    leaf_t = new.clone().requires_grad_(True)
    token_adv = adv.unsqueeze(-1).expand_as(new) * mask
    value_t, _, _, vllm_kl, filtered_t = theirs(leaf_t, old, token_adv, action_mask=mask.to(F64),
                                                rollout_log_probs=rollout, batch_num_tokens=tokens,
                                                global_batch_size=n)
    value_t.backward()

    weights, filtered = rollout_correction_weights(old, rollout, mask, level, mode, gating, threshold)
    leaf = new.clone().requires_grad_(True)
    if loss == "grpo":
        value, _ = grpo_loss(leaf, old, adv, mask, eps_low, eps_high, num_sequences=n, is_weights=weights)
    else:
        value, _ = dapo_loss(leaf, old, adv, mask, eps_low, eps_high, num_tokens=tokens, is_weights=weights)
    value.backward()

    # OpenRLHF's sequence mean divides by (token count + 1e-8): ~1e-9 relative
    torch.testing.assert_close(value, value_t, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(leaf.grad, leaf_t.grad * mask, rtol=1e-7, atol=1e-12)
    assert float(filtered) == pytest.approx(float(filtered_t), abs=1e-7)  # theirs: a float32 mean
    assert float(vllm_kl) == pytest.approx(float(((rollout - old) * mask).sum() / mask.sum()), rel=1e-12)
    assert 0 < float(weights[mask].ne(1).double().mean())  # the correction did something
