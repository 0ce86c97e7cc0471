"""Supervised warm start of the local model before RL (``local.warmstart``).

A randomly initialised tiny model almost never writes a multi-digit answer exactly, so RL on the
testbed would start from all-zero rewards (no advantage, no gradient). The warm start trains it with
cross-entropy on the correct answers (answer + end token) of the task's ``warmstart`` split until
its sampled accuracy on the RL training problems (one sample each at the rollout temperature, graded
with the run's reward) reaches ``target_accuracy``: RL then starts from a weak but non-zero policy,
the same for every method of a comparison (it depends only on the seed and the shared settings).

Deterministic by seed (its own forked RNG; the training RNG is seeded afterwards) and cached in
``<output_dir>/warmstart/``: a rerun or a resumed run loads the cached weights instead of training
again. The held-out problems are never used.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from ..config import TrainConfig
from .data import SetupError, render_prompt, task_splits
from .rollout import generate

CACHE_DIR = "warmstart"


def _cache_key(cfg: TrainConfig) -> dict:
    return {
        "seed": cfg.seed,
        "warmstart": cfg.local.warmstart.model_dump(),
        "task": cfg.local.task.model_dump(),
        "tiny_model": cfg.local.tiny_model.model_dump(),
        "model_path": cfg.model.path,
        "reward": cfg.reward.task,
        "temperature": cfg.rollout.temperature,
        "max_new_tokens": cfg.rollout.max_new_tokens,
    }


def _batch(tokenizer, cfg: TrainConfig, problems: list[tuple[str, str]], device: torch.device):
    """Right-padded prompt + answer + end token; the loss covers the answer and the end token."""
    pad = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    rows, targets = [], []
    for q, a in problems:
        p_ids = tokenizer(render_prompt(tokenizer, q, cfg.data.apply_chat_template), add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(a, add_special_tokens=False)["input_ids"] + [eos]
        rows.append(p_ids + a_ids)
        targets.append([-100] * len(p_ids) + a_ids)
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    labels = torch.tensor([t + [-100] * (width - len(t)) for t in targets], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    return ids, mask, labels


@torch.no_grad()
def sampled_accuracy(model, tokenizer, cfg: TrainConfig, reward, problems: list[tuple[str, str]]) -> float:
    """Mean reward of one sample per problem at the rollout temperature (the global torch RNG)."""
    r = cfg.rollout
    texts = [render_prompt(tokenizer, q, cfg.data.apply_chat_template) for q, _ in problems]
    labels = [{"task": cfg.reward.task, "answer": a} for _, a in problems]
    model.eval()
    out = generate(model, tokenizer, texts, labels, 1, r.temperature, r.top_p, r.max_new_tokens, r.max_prompt_len, 256,
                   min_new_tokens=r.min_new_tokens)
    return sum(reward.grade(resp, lab)[0] for resp, lab in zip(out.responses, out.labels)) / len(problems)


def warm_start(cfg: TrainConfig, model, tokenizer, device: torch.device, output_dir: Path, reward) -> dict | None:
    """Warm-start ``model`` in place (or load the cached result); returns the info written to
    ``<output_dir>/warmstart/info.json``, or None when ``local.warmstart.target_accuracy`` is null."""
    ws = cfg.local.warmstart
    if ws.target_accuracy is None:
        return None
    if cfg.data.train_path is not None:
        raise SetupError("local.warmstart.target_accuracy needs the synthetic task (data.train_path is set)")
    splits = task_splits(cfg)
    if not splits["warmstart"]:
        raise SetupError("local.warmstart.target_accuracy is set but local.task.warmstart_fraction gives no problem")
    cache = Path(output_dir) / CACHE_DIR
    key = _cache_key(cfg)
    info_path, weights_path = cache / "info.json", cache / "model.pt"
    if info_path.is_file() and weights_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("key") == key:
            model.load_state_dict(torch.load(weights_path, map_location=device, weights_only=True))
            return info

    t0 = time.perf_counter()
    devices = [device] if device.type == "cuda" else []
    history = []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(cfg.seed * 7919 + 17)
        rng = random.Random(cfg.seed * 7919 + 17)
        optimizer = torch.optim.AdamW(model.parameters(), lr=ws.lr, betas=(0.9, 0.95), weight_decay=0.0)
        step, accuracy = 0, 0.0
        while True:
            if step % ws.check_every == 0:
                probe = [rng.choice(splits["train"]) for _ in range(ws.check_samples)]
                accuracy = sampled_accuracy(model, tokenizer, cfg, reward, probe)
                history.append({"step": step, "accuracy": accuracy})
                if accuracy >= ws.target_accuracy or step >= ws.max_steps:
                    break
            model.train()
            ids, mask, labels = _batch(tokenizer, cfg, [rng.choice(splits["warmstart"]) for _ in range(ws.batch_size)],
                                       device)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            optimizer.step()
            step += 1
    model.eval()
    model.zero_grad(set_to_none=True)
    info = {"key": key, "steps": step, "accuracy": accuracy, "reached_target": accuracy >= ws.target_accuracy,
            "seconds": time.perf_counter() - t0, "history": history,
            "problems": {name: len(p) for name, p in splits.items()}}
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights_path)
    info_path.write_text(json.dumps(info, indent=1) + "\n")
    return info
