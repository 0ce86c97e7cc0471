"""Prompt sources of the local trainer: the synthetic task, or a JSONL prompt dataset.

Both yield records ``{"prompt": str | list[message], "label": dict}`` and carry their sampling
state in the checkpoint, so that a resumed run draws the same prompts as an uninterrupted one.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..config import TrainConfig
from ..data.sources import DataFormatError, read_jsonl
from ..tasks import ArithmeticTask, arithmetic_problems


class SetupError(ValueError):
    """The run cannot start (missing file, unusable device...); the message names the config key."""


class JsonlPrompts:
    """Prompts from a JSONL file (e.g. written by ``python -m apmpo_openrlhf.data``), reshuffled every epoch."""

    def __init__(
        self, path: str | Path, input_key: str, label_key: str, task: str, seed: int, key_name: str = "data.train_path"
    ) -> None:
        path = Path(path)
        if not path.is_file():
            raise SetupError(f"{key_name}={str(path)!r}: file not found")
        self.records: list[dict] = []
        try:
            for lineno, row in read_jsonl(path):
                for key, name in ((input_key, "data.input_key"), (label_key, "data.label_key")):
                    if key not in row:
                        raise SetupError(
                            f"{name}={key!r}: line {lineno} of {path} has no such field (fields: {sorted(row)})"
                        )
                self.records.append({"prompt": row[input_key], "label": _as_label(row[label_key], task)})
        except DataFormatError as e:  # names the file and line
            raise SetupError(f"{key_name}: {e}") from None
        if not self.records:
            raise SetupError(f"{key_name}={str(path)!r}: no records")
        self._rng = random.Random(seed)
        self._order: list[int] = []
        self._pos = 0

    def sample(self, n: int) -> list[dict]:
        out = []
        for _ in range(n):
            if self._pos >= len(self._order):
                self._order = list(range(len(self.records)))
                self._rng.shuffle(self._order)
                self._pos = 0
            out.append(self.records[self._order[self._pos]])
            self._pos += 1
        return out

    def state_dict(self) -> dict:
        return {"rng": self._rng.getstate(), "order": list(self._order), "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._order = list(state["order"])
        self._pos = int(state["pos"])


def _as_label(value, task: str) -> dict:
    """Labels are JSON objects; a bare answer string becomes ``{"task": task, "answer": value}``."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        value = parsed
    if isinstance(value, dict):
        return value
    return {"task": task, "answer": str(value)}


def build_prompt_source(cfg: TrainConfig):
    if cfg.data.train_path is not None:
        return JsonlPrompts(cfg.data.train_path, cfg.data.input_key, cfg.data.label_key, cfg.reward.task, cfg.seed)
    t = cfg.local.task
    return ArithmeticTask(
        cfg.seed,
        min_operand=t.min_operand,
        max_operand=t.max_operand,
        operations=t.operations,
        max_answer=t.max_answer,
    )


def build_eval_prompts(cfg: TrainConfig) -> list[dict] | None:
    """Held-out prompts for ``eval``: ``data.eval_path``, or every problem of the synthetic task."""
    if cfg.data.eval_path is not None:
        src = JsonlPrompts(
            cfg.data.eval_path, cfg.data.input_key, cfg.data.label_key, cfg.reward.task, cfg.seed, "data.eval_path"
        )
        return src.records
    if cfg.data.train_path is not None:
        return None
    t = cfg.local.task
    return [{"prompt": q, "label": {"task": "arithmetic", "answer": a}}
            for q, a in arithmetic_problems(t.min_operand, t.max_operand, t.operations, t.max_answer)]


def render_prompt(tokenizer, prompt, apply_chat_template: bool) -> str:
    """The text fed to the model: the chat template applied to the prompt (a string or a message list)."""
    if not apply_chat_template:
        if not isinstance(prompt, str):
            raise SetupError("data.apply_chat_template=false needs plain-string prompts, got a message list")
        return prompt
    if tokenizer.chat_template is None:
        raise SetupError("data.apply_chat_template=true but the tokenizer has no chat template")
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
