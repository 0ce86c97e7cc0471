"""What every backend takes and returns, and the prompt rendering both share."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class PromptInput:
    """One problem's chat messages; image parts (``{"type": "image"}``) refer to ``images`` in order."""

    messages: list[dict[str, Any]]
    images: list[str] = field(default_factory=list)  # image file paths


@dataclass(frozen=True)
class SamplingSettings:
    n: int
    temperature: float
    top_p: float
    max_tokens: int


@dataclass
class Completion:
    text: str
    tokens: int  # generated token ids, including a final end-of-sequence token
    finish_reason: str  # "stop" (end of sequence) or "length" (cut at max_tokens)


def is_multimodal_model(model_dir: str | Path) -> bool:
    """True when the model's config has a vision tower (e.g. Qwen2.5-VL)."""
    cfg_path = Path(model_dir) / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return "vision_config" in cfg


def text_only_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with image parts removed and text parts joined (for text-only models)."""
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = "\n".join(p["text"] for p in content if p.get("type") == "text")
        out.append({"role": m["role"], "content": content})
    return out


def has_images(prompt: PromptInput) -> bool:
    return bool(prompt.images)


class Backend:
    """Samples ``n`` completions per prompt. Subclasses set ``name`` and ``multimodal``."""

    name = "base"
    multimodal = False

    def __init__(self, model: str):
        self.model = model
        self._template_owner = None  # tokenizer or processor with the chat template

    def render(self, prompt: PromptInput) -> str:
        """The prompt text after the model's chat template (recorded in the per-sample JSONL).

        Text-only models get the image parts dropped; both backends render identically.
        """
        messages = prompt.messages if self.multimodal else text_only_messages(prompt.messages)
        return self._template_owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(self, prompts: list[PromptInput], seeds: list[int], sampling: SamplingSettings) -> list[list[Completion]]:
        raise NotImplementedError

    def close(self) -> None:
        pass
