"""The logged entropy: OpenRLHF's value, without OpenRLHF's autograd graph (issue 17)."""

from __future__ import annotations

import torch

from apmpo_openrlhf.openrlhf_adapter import entropy_logging


def _openrlhf_entropy(logits):
    # OpenRLHF's own function (torch.compile'd); eager, to compare values on any machine
    from openrlhf.models.utils import compute_entropy

    return compute_entropy.__wrapped__(logits) if hasattr(compute_entropy, "__wrapped__") else compute_entropy(logits)


def test_cheap_entropy_equals_openrlhfs_and_has_no_graph():
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 300, 97, generator=gen) * 4).requires_grad_(True)  # > ROWS_PER_CHUNK rows
    reference = _openrlhf_entropy(logits)
    ours = entropy_logging.cheap_entropy(logits)
    assert reference.requires_grad and not ours.requires_grad
    torch.testing.assert_close(ours, reference.detach(), rtol=1e-6, atol=1e-6)
    exact = -(torch.log_softmax(logits.double(), -1).exp() * torch.log_softmax(logits.double(), -1)).sum(-1)
    torch.testing.assert_close(ours.double(), exact.detach(), rtol=1e-5, atol=1e-5)


def test_swapped_only_when_the_entropy_is_only_logged():
    import openrlhf.models.actor as actor_module

    original = actor_module.compute_entropy
    with entropy_logging.logged_entropy_without_graph(0.0):
        assert actor_module.compute_entropy is entropy_logging.cheap_entropy
    assert actor_module.compute_entropy is original
    for coef in (None, 0.01):  # not computed at all / optimised: OpenRLHF's, with its gradient
        with entropy_logging.logged_entropy_without_graph(coef):
            assert actor_module.compute_entropy is original
