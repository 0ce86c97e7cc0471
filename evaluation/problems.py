"""Types shared by the benchmark registry and its loaders."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from apmpo_openrlhf import prompts

from .backends.base import PromptInput


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    title: str  # column title in reports
    task: str  # reward task in apmpo_openrlhf.rewards: math | sql | choice
    default_path: str  # relative to the data dir
    answer_field: str  # where the gold answer comes from (documentation and --help)
    breakdown_keys: tuple[str, ...] = ()
    multimodal: bool = False
    loader: Callable[..., list["Problem"]] | None = None


@dataclass
class Problem:
    id: str
    prompt: PromptInput
    label: dict[str, Any]  # grading label for apmpo_openrlhf.rewards
    gold: Any  # gold answer shown in samples.jsonl
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadOptions:
    data_dir: str | os.PathLike | None = None
    paths: dict[str, Path] = field(default_factory=dict)
    spider_db_dir: str | os.PathLike | None = None
    bird_db_dir: str | os.PathLike | None = None
    skip_missing_db: bool = False
    prompt_style: str = "qwen"
    limit: int | None = None


@dataclass
class LoadedBenchmark:
    spec: BenchmarkSpec
    path: Path
    problems: list[Problem]
    extra_metrics: dict[str, Any] = field(default_factory=dict)


def image_messages(messages: list[dict[str, str]]) -> list[dict[str, Any]]:
    """prompts.IMAGE_TAG markers -> Hugging Face content parts ({"type": "image"} + text)."""
    out = []
    for m in messages:
        text = m["content"]
        if prompts.IMAGE_TAG not in text:
            out.append(m)
            continue
        parts: list[dict[str, Any]] = []
        for i, piece in enumerate(text.split(prompts.IMAGE_TAG)):
            if i > 0:
                parts.append({"type": "image"})
            if piece:
                parts.append({"type": "text", "text": piece})
        out.append({"role": m["role"], "content": parts})
    return out
