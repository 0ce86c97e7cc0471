"""Fixtures of the evaluation tests: a tiny model that answers some benchmark problems correctly,
and a tiny sentence-embedding model. Both are real Hugging Face / sentence-transformers folders
built locally from code (no downloads)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# The bigram model's only path from the end of the prompt ("assistant\n"): \boxed{X} then end of turn,
# X drawn uniformly from these (each 1/3): "9" answers MATH500 #4, "2" OlympiadBench #1 and #4,
# "B" Geometry3K 2401.
BIGRAM_ANSWERS = ("9", "2", "B")


def build_bigram_model(out_dir: Path) -> Path:
    """A 1-layer Llama whose blocks add nothing (o_proj, down_proj = 0), so the next token depends on
    the current one only, through untied embeddings: a hand-set bigram table. After the prompt's
    final newline it writes ``\\boxed{X}`` and stops."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from apmpo_openrlhf.models.tiny import build_char_tokenizer

    out = Path(out_dir)
    if (out / "config.json").exists():
        return out
    tok = build_char_tokenizer()
    hidden = 128
    vocab = len(tok)
    assert vocab <= hidden, vocab
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=4, head_dim=32, max_position_embeddings=8192,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=False, torch_dtype="float32")
    model = LlamaForCausalLM(cfg)
    ids = {c: tok.convert_tokens_to_ids(c) for c in "\n\\boxed{}" + "".join(BIGRAM_ANSWERS)}
    eos = tok.eos_token_id
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(vocab, hidden))
        model.model.norm.weight.fill_(1.0)
        w = torch.zeros(vocab, hidden)
        w[eos, :vocab] = 2.0  # default: end the turn
        chain = ["\n", "\\", "b", "o", "x", "e", "d", "{"]
        for cur, nxt in zip(chain, chain[1:]):
            w[:, ids[cur]] = 0.0
            w[ids[nxt], ids[cur]] = 2.0
        w[:, ids["{"]] = 0.0
        for a in BIGRAM_ANSWERS:
            w[ids[a], ids["{"]] = 2.0
            w[:, ids[a]] = 0.0
            w[ids["}"], ids[a]] = 2.0
        model.lm_head.weight.copy_(w)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def bigram_model_dir(tmp_path_factory) -> Path:
    return build_bigram_model(tmp_path_factory.mktemp("bigram") / "model")


def _run_cli(module: str, *args: str, timeout: float = 300, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m <module> args`` from the repository root, as a user runs it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    # One thread per process: the tiny models are faster so on a busy 2-core machine.
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli("evaluation.run", *args)``: the CLI in a subprocess, from the repository root."""
    return _run_cli


@pytest.fixture(scope="session")
def embedding_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A sentence-transformers folder (tiny Llama encoder + mean pooling), built locally."""
    from sentence_transformers import SentenceTransformer, models

    out = tmp_path_factory.mktemp("embedder") / "model"
    encoder = models.Transformer(str(tiny_model_dir), max_seq_length=256)
    pooling = models.Pooling(encoder.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[encoder, pooling], device="cpu").save(str(out))
    return out
