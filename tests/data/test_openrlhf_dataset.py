"""Prepared datasets load into OpenRLHF's own PromptDataset (the class --data.* options feed) and
its prompts/labels reach reward_func intact."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from apmpo_openrlhf.data.__main__ import main
from apmpo_openrlhf.prompts import MATH_INSTRUCTION
from apmpo_openrlhf.rewards import grade_label


def _prompt_dataset(path: Path, tokenizer):
    datasets = pytest.importorskip("datasets")
    prompts_dataset = pytest.importorskip("openrlhf.datasets.prompts_dataset")
    data = datasets.load_dataset("json", data_files=str(path), split="train")
    args = SimpleNamespace(data=SimpleNamespace(input_key="prompt", label_key="label", apply_chat_template=True,
                                                image_key="images"))
    strategy = SimpleNamespace(args=args, is_rank_0=lambda: False)
    return prompts_dataset.PromptDataset(data, tokenizer, strategy)


VL_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture
def tokenizer():
    from apmpo_openrlhf.models.tiny import CHAT_TEMPLATE, build_char_tokenizer

    tok = build_char_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    return tok


def test_math_and_geometry_rows_through_prompt_dataset(data_dir, tmp_path, tokenizer):
    assert main(["math", "--data-dir", str(data_dir), "--benchmarks", "math500", "--limit", "3", "--out", str(tmp_path)]) == 0
    ds = _prompt_dataset(tmp_path / "math500.jsonl", tokenizer)
    datasource, prompt, label, image = ds[0]
    assert datasource == "math500" and image is None
    assert prompt.startswith(f"<|im_start|>system\n{MATH_INSTRUCTION}<|im_end|>\n<|im_start|>user\n")
    assert prompt.endswith("<|im_start|>assistant\n")
    assert grade_label("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", label) == (1.0, "correct")

    assert main(["geometry3k", "--data-dir", str(data_dir), "--splits", "test", "--limit", "2", "--out", str(tmp_path)]) == 0
    # OpenRLHF turns "<image>" into an image content part; VLM templates (Qwen2-VL style) render it.
    tokenizer.chat_template = VL_TEMPLATE
    ds = _prompt_dataset(tmp_path / "geometry3k_test.jsonl", tokenizer)
    datasource, prompt, label, images = ds[0]
    assert datasource == "geometry3k_test"
    assert prompt.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Find the area of the figure.")
    assert Path(images[0]).is_file()
    assert json.loads(label)["task"] == "choice"
