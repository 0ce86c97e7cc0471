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


def test_min_new_tokens_keeps_the_end_token_out_of_the_first_positions(tiny_model_dir):
    """rollout.min_new_tokens on the local sampler is vLLM's min_tokens (what OpenRLHF samples with):
    a model that all but always ends at once gives empty responses with 0 and none with 1; the
    recorded sampler log-probs are those of the masked distribution, as the sampler drew from it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from apmpo_openrlhf.local.rollout import generate

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = model.config.eos_token_id if isinstance(model.config.eos_token_id, int) else model.config.eos_token_id[0]
    head = torch.nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[eos] = 12.0  # P(end) ~ 1 - vocab * e^-12 at every position
    model.lm_head = head
    texts, labels = ["1+2=", "3-1="], [{"task": "arithmetic", "answer": "3"}, {"task": "arithmetic", "answer": "2"}]
    runs = {}
    for min_new in (0, 1, 3):
        torch.manual_seed(0)
        runs[min_new] = generate(model, tokenizer, texts, labels, n_samples=16, temperature=1.0, top_p=1.0,
                                 max_new_tokens=4, max_prompt_len=16, chunk_prompts=2, record_log_probs=True,
                                 min_new_tokens=min_new)
    ids = {k: r.sequences[:, r.prompt_len:] for k, r in runs.items()}
    lengths = {k: r.response_lengths for k, r in runs.items()}  # response tokens, the end token included
    assert (ids[0][:, 0] == eos).float().mean() > 0.95 and (lengths[0] == 1).float().mean() > 0.95  # empty
    assert not (ids[1][:, 0] == eos).any() and (lengths[1] == 2).float().mean() > 0.95
    assert not (ids[3][:, :3] == eos).any() and (lengths[3] == 4).float().mean() > 0.95
    # The first token of a min_new_tokens=1 sample came from the distribution without the end token.
    first = runs[1].sample_log_probs[:, 0]
    assert (first > -torch.log(torch.tensor(float(model.config.vocab_size - 1))) - 1e-3).all()
