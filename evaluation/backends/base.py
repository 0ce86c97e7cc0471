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


class PromptRenderer:
    """Chat messages -> prompt text with the model's chat template, the same for every backend.

    The tokenizer's template is used (vision-language models such as Qwen2.5-VL ship theirs in
    tokenizer_config.json too and turn ``{"type": "image"}`` parts into their image placeholder);
    only a model whose tokenizer has none falls back to its processor. With ``multimodal`` False
    the image parts are dropped.
    """

    def __init__(self, model: str, multimodal: bool):
        from transformers import AutoTokenizer

        self.multimodal = multimodal
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self._template_owner = self.tokenizer
        if not getattr(self.tokenizer, "chat_template", None) and multimodal:
            from transformers import AutoProcessor

            self._template_owner = AutoProcessor.from_pretrained(model)
        if not getattr(self._template_owner, "chat_template", None):
            raise ValueError(f"--model {model}: it has no chat template; the harness needs one")

    def render(self, prompt: PromptInput) -> str:
        messages = prompt.messages if self.multimodal else text_only_messages(prompt.messages)
        return self._template_owner.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def token_ids(self, text: str) -> list[int]:
        # The chat template already holds every special token: add none.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


class Backend:
    """Samples ``n`` completions per prompt. Subclasses set ``name`` and ``renderer``."""

    name = "base"

    def __init__(self, model: str):
        self.model = model
        self.renderer: PromptRenderer | None = None

    @property
    def multimodal(self) -> bool:
        return bool(self.renderer and self.renderer.multimodal)

    def render(self, prompt: PromptInput) -> str:
        """The prompt text after the model's chat template (recorded in the per-sample JSONL)."""
        return self.renderer.render(prompt)

    def generate(self, prompts: list[PromptInput], seeds: list[int], sampling: SamplingSettings) -> list[list[Completion]]:
        raise NotImplementedError

    def close(self) -> None:
        pass
