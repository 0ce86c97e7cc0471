"""Sampling G responses per prompt and computing per-token log-probs (policy, old, reference).

A rollout batch is one tensor ``sequences`` [N, P + T]: prompts left-padded to P tokens, responses
right-padded to T tokens, consecutive G rows per prompt (the layout ``group_advantages`` expects).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    MinNewTokensLengthLogitsProcessor,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)


@dataclass
class Rollout:
    sequences: torch.Tensor  # [N, P + T] token ids
    attention_mask: torch.Tensor  # [N, P + T] 1 for prompt and response tokens (incl. the end token)
    action_mask: torch.Tensor  # [N, T] bool, response tokens that enter the loss
    prompt_len: int  # P
    responses: list[str]
    labels: list[dict]
    # log pi_sample of each response token under the sampler's final distribution (after temperature
    # and top-p), [N, T] float32; None when not recorded
    sample_log_probs: torch.Tensor | None = None

    @property
    def response_lengths(self) -> torch.Tensor:
        return self.action_mask.sum(-1)

    def select(self, rows: torch.Tensor) -> "Rollout":
        idx = rows.tolist()
        return Rollout(
            self.sequences[rows],
            self.attention_mask[rows],
            self.action_mask[rows],
            self.prompt_len,
            [self.responses[i] for i in idx],
            [self.labels[i] for i in idx],
            None if self.sample_log_probs is None else self.sample_log_probs[rows],
        )


def _eos_ids(model, tokenizer) -> list[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = eos if isinstance(eos, list) else [eos]
    return [int(i) for i in ids if i is not None]


def generated_span(responses: torch.Tensor, eos_ids: list[int]) -> torch.Tensor:
    """Tokens the sampler produced and attended to: everything up to and including the first end token."""
    is_eos = torch.isin(responses, torch.tensor(eos_ids, device=responses.device))
    ended_before = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    return ~ended_before


def response_mask(responses: torch.Tensor, eos_ids: list[int], pad_id: int | None) -> torch.Tensor:
    """Valid response tokens: everything up to and including the first end token, except a pad token
    that a model sampled in the middle (it is no output; the tokens after it still are)."""
    mask = generated_span(responses, eos_ids)
    if pad_id is not None and pad_id not in eos_ids:
        mask &= responses != pad_id
    return mask


class SampledLogProbs(LogitsProcessor):
    """Records the sampler's log-prob of every sampled token: the log-softmax of the scores after
    the last warper, gathered at the token drawn from them (seen as the newest input id at the next
    step; the last step's token after ``generate`` returns, :meth:`finish`). Keeps one [rows, vocab]
    tensor at a time; returns the scores unchanged."""

    def __init__(self) -> None:
        self.pending: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.pending is not None:
            self.steps.append(self.pending.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.pending = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, generated: torch.Tensor) -> torch.Tensor:
        """[rows, steps] log-probs of ``generated`` (the new tokens of generate's output)."""
        if self.pending is not None:
            self.steps.append(self.pending.gather(-1, generated[:, -1:]).squeeze(-1))
            self.pending = None
        if not self.steps:
            return generated.new_zeros(generated.shape, dtype=torch.float32)
        return torch.stack(self.steps, dim=1)[:, : generated.shape[1]]


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompt_texts: list[str],
    labels: list[dict],
    n_samples: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    max_prompt_len: int,
    chunk_prompts: int,
    record_log_probs: bool = False,
    *,
    min_new_tokens: int,
) -> Rollout:
    """Sample ``n_samples`` responses per prompt with the model's ``generate`` (global torch RNG).

    ``min_new_tokens``: ``rollout.min_new_tokens`` (no default here: the config's is the only one).

    ``record_log_probs``: also return the sampler's log-probs of the sampled tokens
    (``Rollout.sample_log_probs``), to measure the rollout/trainer mismatch."""
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"  # keep the end of a long prompt (the generation prompt)
    enc = tokenizer(
        prompt_texts, return_tensors="pt", padding=True, truncation=True, max_length=max_prompt_len,
        add_special_tokens=False,
    )
    prompt_len = enc["input_ids"].shape[1]
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    # A fresh config: a real model's generation_config (repetition_penalty, top_k, its own
    # temperature...) would make the samples come from a distribution other than the policy's.
    # Temperature and top-p are passed as processors (in generate's own order) so that the recorder
    # runs after them; generate then adds no warper of its own (temperature 1, top_p 1, top_k 0).
    warpers = []
    if min_new_tokens > 0:  # vLLM's min_tokens: the end token is masked out until then
        warpers.append(MinNewTokensLengthLogitsProcessor(prompt_len, min_new_tokens, eos_ids, device=device))
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    gen_config = GenerationConfig(
        do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens,
        num_return_sequences=n_samples, pad_token_id=pad_id, eos_token_id=eos_ids,
    )
    outs, recorded = [], []
    for start in range(0, len(prompt_texts), chunk_prompts):
        ids = enc["input_ids"][start : start + chunk_prompts].to(device)
        am = enc["attention_mask"][start : start + chunk_prompts].to(device)
        recorder = SampledLogProbs() if record_log_probs else None
        processors = LogitsProcessorList([*warpers, *([recorder] if recorder else [])])
        out = model.generate(input_ids=ids, attention_mask=am, generation_config=gen_config,
                             logits_processor=processors)
        outs.append(out[:, prompt_len:])
        if recorder is not None:
            recorded.append(recorder.finish(outs[-1]))
    width = max(o.shape[1] for o in outs)
    responses = torch.cat([torch.nn.functional.pad(o, (0, width - o.shape[1]), value=pad_id) for o in outs])
    sample_lp = (torch.cat([torch.nn.functional.pad(r, (0, width - r.shape[1])) for r in recorded])
                 if record_log_probs else None)
    action_mask = response_mask(responses, eos_ids, pad_id)
    # The trainer's forward must see the context the sampler saw: generate attends to every token
    # it produced, a sampled pad token included (it is only left out of the loss by action_mask).
    span = generated_span(responses, eos_ids)
    # Drop response columns that no sample produced (the span is a prefix of each row).
    width = max(int(span.sum(-1).max()), 1)
    responses, action_mask, span = responses[:, :width], action_mask[:, :width], span[:, :width]
    if sample_lp is not None:
        sample_lp = torch.where(action_mask, sample_lp[:, :width], 0.0)
    prompt_ids = enc["input_ids"].to(device).repeat_interleave(n_samples, 0)
    prompt_am = enc["attention_mask"].to(device).repeat_interleave(n_samples, 0)
    sequences = torch.cat([prompt_ids, torch.where(span, responses, pad_id)], dim=1)
    attention_mask = torch.cat([prompt_am, span.long()], dim=1)
    texts = tokenizer.batch_decode(torch.where(action_mask, responses, pad_id), skip_special_tokens=True)
    return Rollout(
        sequences, attention_mask, action_mask, prompt_len, texts,
        [label for label in labels for _ in range(n_samples)], sample_lp,
    )


def token_log_probs(
    model, sequences: torch.Tensor, attention_mask: torch.Tensor, prompt_len: int, temperature: float,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(o_t | q, o_<t) for the response tokens [N, T] (float32), and optionally the token entropy.

    Logits are divided by the sampling temperature so that the ratio is taken against the
    distribution the responses were drawn from. Position ids skip the left padding, as in generate.
    """
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=sequences, attention_mask=attention_mask, position_ids=position_ids).logits
    logits = logits[:, prompt_len - 1 : -1].float() / temperature
    targets = sequences[:, prompt_len:]
    log_z = torch.logsumexp(logits, dim=-1)
    log_probs = torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1) - log_z
    entropy = None
    if with_entropy:
        with torch.no_grad():
            probs = torch.softmax(logits, dim=-1)
            entropy = log_z - (probs * logits).sum(-1)
    return log_probs, entropy
