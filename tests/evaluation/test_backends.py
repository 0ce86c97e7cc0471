"""Prompt rendering shared by the backends, and vLLM's engine inputs (text and image prompts)."""

from __future__ import annotations

import json

import pytest

from evaluation.backends.base import PromptRenderer
from evaluation.backends.vllm_backend import engine_input
from evaluation.benchmarks import LoadOptions, load_benchmark

# A Qwen2-VL-style template: image parts become the vision placeholder tokens.
VL_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def geometry(data_dir):
    return load_benchmark("geometry3k", LoadOptions(data_dir=data_dir, limit=2)).problems


@pytest.fixture(scope="module")
def vl_model_dir(tmp_path_factory):
    """Tokenizer + config of a vision-language model (no weights: only the input side is tested)."""
    from apmpo_openrlhf.models.tiny import build_char_tokenizer

    d = tmp_path_factory.mktemp("vl")
    tok = build_char_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|vision_start|>",
                                                         "<|vision_end|>", "<|image_pad|>"]})
    tok.chat_template = VL_TEMPLATE
    tok.save_pretrained(d)
    (d / "config.json").write_text(json.dumps({"model_type": "qwen2_vl", "vision_config": {"depth": 1}}))
    return d


def test_text_model_gets_problem_text_without_image(tiny_model_dir, geometry):
    renderer = PromptRenderer(str(tiny_model_dir), multimodal=False)
    problem = geometry[0]
    text = renderer.render(problem.prompt)
    user = problem.prompt.messages[0]["content"]
    assert [p["type"] for p in user] == ["image", "text"]
    assert text == f"<|im_start|>user\n{user[1]['text']}<|im_end|>\n<|im_start|>assistant\n"
    assert "Choices:\nA. " in text and "<image>" not in text
    inp = engine_input(renderer, problem.prompt)
    assert inp == {"prompt_token_ids": renderer.tokenizer(text, add_special_tokens=False)["input_ids"]}
    assert renderer.tokenizer.decode(inp["prompt_token_ids"]) == text  # no extra BOS or other token added


def test_vision_language_model_gets_image_and_placeholder(vl_model_dir, geometry):
    from PIL import Image

    renderer = PromptRenderer(str(vl_model_dir), multimodal=True)
    problem = geometry[1]
    inp = engine_input(renderer, problem.prompt)
    assert inp["prompt"].startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>")
    assert inp["prompt"].endswith("<|im_end|>\n<|im_start|>assistant\n")
    image = inp["multi_modal_data"]["image"]
    with Image.open(problem.prompt.images[0]) as original:
        assert image.mode == "RGB" and image.size == original.size


def test_model_without_chat_template_is_refused(tiny_model_dir, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    for name in ("chat_template.jinja",):
        (d / name).unlink(missing_ok=True)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (d / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="no chat template"):
        PromptRenderer(str(d), multimodal=False)
