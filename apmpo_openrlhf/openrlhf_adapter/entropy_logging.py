"""The token entropy that OpenRLHF logs, computed without an autograd graph.

With ``--actor.entropy_coef 0`` (set by the mapping: the entropy is logged, never optimised)
OpenRLHF's ``Actor.forward`` still runs its ``compute_entropy`` (models/utils.py, torch.compile'd)
on the float32 logits of every train micro-batch *with* gradients enabled: softmax over the whole
vocabulary, and the tensors saved for a backward pass that never comes stay alive until the step's
backward is done. At a 4k-token micro-batch and a 152k vocabulary that is several GB per sequence
only to log one number. :func:`cheap_entropy` returns the same values (to float32 rounding), computed
under ``no_grad`` in row chunks; :func:`logged_entropy_without_graph` swaps it in for one training
step, the way ``actor.core_kl_estimator`` swaps the KL estimator.
"""

from __future__ import annotations

import contextlib

import torch

# rows (positions) per chunk: 256 x 152k vocabulary x 4 bytes = 156 MB per temporary
ROWS_PER_CHUNK = 256


@torch.no_grad()
def cheap_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H = logsumexp(z) - sum softmax(z) z over the last axis, without a graph, chunk by chunk."""
    flat = logits.detach().reshape(-1, logits.shape[-1])
    out = torch.empty(flat.shape[0], dtype=torch.float32, device=logits.device)
    for start in range(0, flat.shape[0], ROWS_PER_CHUNK):
        z = flat[start : start + ROWS_PER_CHUNK].float()
        log_norm = torch.logsumexp(z, dim=-1)
        out[start : start + ROWS_PER_CHUNK] = log_norm - (torch.softmax(z, dim=-1) * z).sum(-1)
    return out.reshape(logits.shape[:-1])


@contextlib.contextmanager
def logged_entropy_without_graph(entropy_coef: float | None):
    """During one ``training_step``: OpenRLHF's actor computes the logged entropy with
    :func:`cheap_entropy` when it only logs it (``entropy_coef == 0``); otherwise nothing changes
    (a nonzero coefficient needs the gradient)."""
    if entropy_coef != 0:
        yield
        return
    import openrlhf.models.actor as actor_module

    original = actor_module.compute_entropy
    actor_module.compute_entropy = cheap_entropy
    try:
        yield
    finally:
        actor_module.compute_entropy = original
