"""Rollout plumbing: response masks and log-probs under left padding."""

from __future__ import annotations

import torch

from apmpo_openrlhf.local.rollout import response_mask, token_log_probs


def test_response_mask_stops_after_the_first_end_token():
    eos, pad = 2, 0
    responses = torch.tensor([[5, 6, 2, 0, 0], [5, 2, 7, 2, 0], [5, 6, 7, 8, 9], [2, 0, 0, 0, 0]])
    mask = response_mask(responses, [eos], pad)
    expected = torch.tensor(
        [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool
    )
    assert torch.equal(mask, expected)


def test_log_probs_do_not_depend_on_left_padding(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    vocab = model.config.vocab_size
    prompt = torch.randint(4, vocab, (1, 5))
    response = torch.randint(4, vocab, (1, 4))
    seq = torch.cat([prompt, response], 1)
    alone, _ = token_log_probs(model, seq, torch.ones_like(seq), 5, temperature=1.0)
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), seq], 1)
    am = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(seq)], 1)
    in_batch, ent = token_log_probs(model, padded, am, 8, temperature=1.0, with_entropy=True)
    torch.testing.assert_close(in_batch, alone, atol=1e-5, rtol=1e-5)
    # Reference: log-softmax of the full forward pass, gathered at the response tokens.
    logits = model(seq).logits[0, 4:8].double()
    ref = torch.log_softmax(logits, -1).gather(-1, response[0].unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(alone[0].double(), ref, atol=1e-5, rtol=1e-5)
    probs = torch.softmax(logits, -1)
    torch.testing.assert_close(ent[0].double(), -(probs * probs.log()).sum(-1), atol=1e-4, rtol=1e-4)
