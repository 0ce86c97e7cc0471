"""Prompt sources of the local trainer: the synthetic task, or a JSONL prompt dataset.

Both yield records ``{"prompt": str | list[message], "label": dict}`` and carry their sampling
state in the checkpoint, so that a resumed run draws the same prompts as an uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

from ..config import TrainConfig
from ..config.local import TaskSection
from ..data.sources import DataFormatError, read_jsonl
from ..tasks import ArithmeticTask, arithmetic_problems, as_records, split_problems


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


def task_splits(cfg: TrainConfig) -> dict[str, list[tuple[str, str]]]:
    """The synthetic task's problems split into ``train``, ``heldout`` and ``warmstart`` (local.task).

    The training prompts, the eval prompts and the warm start all need the split; it is enumerated
    once per task setting (4 operands of 0-49 are 6.25M problems), and each caller gets its own lists.
    """
    return {name: list(problems) for name, problems in _task_splits(cfg.local.task.model_dump_json()).items()}


@functools.lru_cache(maxsize=1)
def _task_splits(task_json: str) -> dict[str, tuple[tuple[str, str], ...]]:
    t = TaskSection.model_validate_json(task_json)
    problems = arithmetic_problems(t.min_operand, t.max_operand, t.operations, t.max_answer, t.num_operands)
    try:
        splits = split_problems(problems, t.heldout_fraction, t.warmstart_fraction, t.split_seed)
    except ValueError as e:
        raise SetupError(f"local.task: {e}") from None
    return {name: tuple(ps) for name, ps in splits.items()}


def build_prompt_source(cfg: TrainConfig):
    if cfg.data.train_path is not None:
        return JsonlPrompts(cfg.data.train_path, cfg.data.input_key, cfg.data.label_key, cfg.reward.task, cfg.seed)
    # Labels name the reward the run grades with (arithmetic, or arithmetic_exact for the testbed).
    return ArithmeticTask(cfg.seed, problems=task_splits(cfg)["train"], label_task=_label_task(cfg))


def _label_task(cfg: TrainConfig) -> str:
    return cfg.reward.task if cfg.reward.task.startswith("arithmetic") else "arithmetic"


def build_eval_prompts(cfg: TrainConfig) -> list[dict] | None:
    """Held-out prompts for ``eval``: ``data.eval_path``, or the synthetic task's held-out split
    (every problem of the task when ``local.task.heldout_fraction`` is 0)."""
    if cfg.data.eval_path is not None:
        src = JsonlPrompts(
            cfg.data.eval_path, cfg.data.input_key, cfg.data.label_key, cfg.reward.task, cfg.seed, "data.eval_path"
        )
        return src.records
    if cfg.data.train_path is not None:
        return None
    splits = task_splits(cfg)
    problems = splits["heldout"] if cfg.local.task.heldout_fraction > 0 else splits["train"]
    return as_records(problems, _label_task(cfg))


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
