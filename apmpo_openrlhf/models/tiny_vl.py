"""A tiny Qwen2.5-VL (vision-language) model with a character tokenizer, built locally.

The same architecture as Qwen2.5-VL-3B-Instruct, shrunk: a 2-layer text model (hidden 64, head_dim
32, M-RoPE with ``mrope_section`` summing to head_dim / 2), a 2-block vision tower (hidden 64,
patch 14, 2x2 patch merging, window attention with one full-attention block), the Qwen2.5-VL
processor with the image processor limited to 56^2 - 112^2 pixels (a Geometry3K diagram becomes
about 12 image tokens), and the character tokenizer of :mod:`.tiny` extended with Qwen's vision
special tokens, whose ids the config names (``image_token_id`` ...). The folder is an ordinary
Hugging Face model directory: transformers (``AutoModelForImageTextToText``, ``AutoProcessor``),
OpenRLHF and vLLM open it as they open the real model.

The random weights are sharpened after initialisation: a random model's next-token distribution is
nearly uniform and its attention nearly position-blind, so two forwards would agree whether they
used M-RoPE positions or 1-D ones. The output layer is multiplied by ``logit_scale`` and the
attention's query/key and value/output projections by ``attention_scale``: then 1-D positions
instead of M-RoPE change a Geometry3K prompt's log-probs by up to 0.75 and another diagram by
~0.3, while vLLM and transformers agree to ~4e-6 in float32. Then ``answer_prior_steps`` AdamW steps teach it to
answer any image prompt with one letter A-D and end its turn (:func:`_teach_answer_format`): the
choice reward is then mixed within a group, so RL has a gradient (reaching the vision tower) and
Pass@k is not trivially 0.
"""

from __future__ import annotations

import argparse
import json
import string
import subprocess
import sys
from pathlib import Path

from .tiny import build_char_tokenizer

# Qwen2-VL's vision special tokens (added after the character vocabulary; the config names their ids).
VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
IMAGE_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"

# Qwen2-VL's chat template structure (a content list's image parts become the vision placeholder),
# without the default system message (shorter prompts for a character tokenizer).
VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "{{ '" + IMAGE_PLACEHOLDER + "' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

ANSWER_PRIOR_BATCH = 4
MIN_PIXELS = 56 * 56
MAX_PIXELS = 112 * 112


def build_vl_tokenizer():
    """The character tokenizer of :mod:`.tiny` plus Qwen2-VL's vision special tokens and chat template."""
    tokenizer = build_char_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", *VISION_TOKENS]})
    tokenizer.chat_template = VL_CHAT_TEMPLATE
    return tokenizer


def build_vl_processor(tokenizer=None, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS):
    """The Qwen2.5-VL processor (image and video processors, tokenizer, chat template).

    Its video processor imports torchvision: where torchvision is absent the CPU backend's stand-in
    is installed first (``openrlhf_adapter/vision_standin.py``).
    """
    from ..openrlhf_adapter import vision_standin

    vision_standin.install()
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tokenizer = tokenizer if tokenizer is not None else build_vl_tokenizer()
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    geometry = dict(patch_size=14, temporal_patch_size=2, merge_size=2)
    image_processor = Qwen2VLImageProcessorPil(size=dict(size), **geometry)
    video_processor = Qwen2VLVideoProcessor(size=dict(size), **geometry)
    return Qwen2_5_VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               video_processor=video_processor, chat_template=VL_CHAT_TEMPLATE)


def tiny_vl_config(tokenizer, hidden_size: int = 64, num_layers: int = 2, max_position_embeddings: int = 2048,
                   vision_depth: int = 2, vision_hidden_size: int = 64):
    """The Qwen2_5_VLConfig of the tiny model; ``tokenizer`` gives the vocabulary and special-token ids."""
    from transformers import Qwen2_5_VLConfig

    head_dim = 32  # vLLM's CPU attention needs head_dim >= 32
    if hidden_size % head_dim or vision_hidden_size % head_dim:
        raise ValueError(f"hidden sizes must be multiples of head_dim {head_dim}, got {hidden_size}, {vision_hidden_size}")
    half = head_dim // 2  # M-RoPE: temporal, height, width sections of the rotary half
    mrope_section = [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]  # 16 -> [4, 6, 6]
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in VISION_TOKENS}
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // head_dim,
        num_key_value_heads=hidden_size // head_dim,
        max_position_embeddings=max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope_section},
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = dict(
        depth=vision_depth,
        hidden_size=vision_hidden_size,
        intermediate_size=2 * vision_hidden_size,
        num_heads=vision_hidden_size // head_dim,
        out_hidden_size=hidden_size,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=56,  # 2 x 2 merged patches per window
        fullatt_block_indexes=[vision_depth - 1],
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
        dtype="float32",
    )


def _teach_answer_format(model, processor, steps: int, seed: int) -> None:
    """A few AdamW steps on synthetic image prompts (seeded noise image, random text) whose target is
    one letter A-D, drawn uniformly, then the end of the turn. Rewards of a random model are all 0
    (it never names a choice), so a group never has an advantage and nothing, the vision tower
    included, would be trained; afterwards about one sample in four names the gold letter."""
    import random

    import torch

    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more threads only contend (8x slower on 2 busy cores)
    model.train()
    try:
        _answer_steps(model, processor, optimizer, rng, steps)
    finally:
        torch.set_num_threads(threads)
    model.eval()


def _answer_steps(model, processor, optimizer, rng, steps: int) -> None:
    import numpy as np
    import torch
    from PIL import Image

    alphabet = string.ascii_letters + string.digits + " .,=+-()\n"
    end = processor.tokenizer.eos_token
    for _ in range(steps):
        for _ in range(ANSWER_PRIOR_BATCH):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(20, 200)))
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
            prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            pixels = np.random.default_rng(rng.randrange(2**31)).integers(0, 256, (84, 112, 3), dtype=np.uint8)
            inputs = processor(text=[prompt + rng.choice("ABCD") + end], images=[Image.fromarray(pixels)],
                               return_tensors="pt", add_special_tokens=False)
            labels = torch.full_like(inputs["input_ids"], -100)
            labels[:, -2:] = inputs["input_ids"][:, -2:]  # the letter and the end of the turn
            (model(**inputs, labels=labels).loss / ANSWER_PRIOR_BATCH).backward()
        optimizer.step()
        optimizer.zero_grad()


def build_tiny_vl_model(
    out_dir: str | Path,
    hidden_size: int = 64,
    num_layers: int = 2,
    max_position_embeddings: int = 2048,
    vision_depth: int = 2,
    vision_hidden_size: int = 64,
    logit_scale: float = 8.0,
    attention_scale: tuple[float, float] = (4.0, 3.0),
    answer_prior_steps: int = 40,
    seed: int = 0,
) -> Path:
    """Create (or reuse) the tiny Qwen2.5-VL + processor in ``out_dir`` (module docstring).

    Where this process imported transformers before torchvision (or its stand-in) was importable,
    the model is built in a fresh ``python -m apmpo_openrlhf.models.tiny_vl`` process instead.
    """
    out = Path(out_dir)
    if (out / "config.json").exists() and (out / "processor_config.json").exists():
        return out
    options = dict(hidden_size=hidden_size, num_layers=num_layers, max_position_embeddings=max_position_embeddings,
                   vision_depth=vision_depth, vision_hidden_size=vision_hidden_size, logit_scale=logit_scale,
                   attention_scale=list(attention_scale), answer_prior_steps=answer_prior_steps, seed=seed)
    from ..openrlhf_adapter import vision_standin

    if not vision_standin.usable_here():  # transformers imported before torchvision (or its stand-in)
        cmd = [sys.executable, "-m", __name__, str(out), "--options", json.dumps(options)]
        subprocess.run(cmd, check=True)
        return out
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    tokenizer = build_vl_tokenizer()
    processor = build_vl_processor(tokenizer)
    config = tiny_vl_config(tokenizer, hidden_size, num_layers, max_position_embeddings, vision_depth,
                            vision_hidden_size)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config)
    qk_scale, vo_scale = attention_scale
    with torch.no_grad():  # sharpen (module docstring); tied, so the input embeddings scale too
        model.get_output_embeddings().weight.mul_(logit_scale)
        for layer in model.model.language_model.layers:
            for proj, scale in ((layer.self_attn.q_proj, qk_scale), (layer.self_attn.k_proj, qk_scale),
                                (layer.self_attn.v_proj, vo_scale), (layer.self_attn.o_proj, vo_scale)):
                proj.weight.mul_(scale)
    if answer_prior_steps:
        _teach_answer_format(model, processor, answer_prior_steps, seed)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    processor.save_pretrained(out)  # processor_config.json last: marks a complete folder
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m apmpo_openrlhf.models.tiny_vl",
        description="Build the tiny Qwen2.5-VL model (random, sharpened, taught to answer with a letter) into OUT.",
    )
    parser.add_argument("out", help="model folder to create (kept if it is already complete)")
    parser.add_argument("--options", default="{}", help="JSON object of build_tiny_vl_model keyword arguments")
    args = parser.parse_args(argv)
    build_tiny_vl_model(args.out, **json.loads(args.options))


if __name__ == "__main__":
    main()
