"""The weight-sync check on an image prompt, for vision-language models.

:class:`~.loop_checks.WeightSyncCheck` compares each vLLM engine's prompt log-probs of a fixed
sequence with the actor's. For a vision-language model the sequence here is an image prompt, sent
the way a rollout sends it: the processor expands the image placeholder (OpenRLHF's
``process_prompt_with_images``, as in its ``SingleTurnAgentExecutor``), the engine gets the
expanded token ids plus the image (``RolloutRayActor.generate`` collapses the placeholders and vLLM
expands them again), the actor's ``forward`` gets ``pixel_values`` / ``image_grid_thw`` as
``mm_train_inputs_list``, from which OpenRLHF's ``Actor.forward`` rebuilds ``mm_token_type_ids``
(without them transformers' Qwen2.5-VL silently uses 1-D positions instead of M-RoPE). So the check
covers the language model, the vision tower and the merger (with ``freeze_visual_encoder: false``
they are trained and synced), M-RoPE positions on both sides, and the engine's encoder cache: the
same image is sent before training and after every sync, so an embedding cached from the old
vision weights would show as a difference (``encoder_cache_guard.py``).
"""

from __future__ import annotations

import numpy as np

from .loop_checks import PROBE_TEXT, WeightSyncCheck

# 84 x 112 pixels: a multiple of 28 (patch 14 x merge 2) inside Qwen2-VL's default pixel range and
# the tiny model's 56^2 - 112^2, so it is not resized: 6 x 8 merged patches = 12 image tokens.
PROBE_IMAGE_SIZE = (112, 84)  # PIL (width, height)


def probe_image(seed: int = 0):
    """A fixed RGB image of seeded noise (no data file needed)."""
    from PIL import Image

    width, height = PROBE_IMAGE_SIZE
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, mode="RGB")


def is_multimodal_processor(tokenizer) -> bool:
    """OpenRLHF's own test for a VLM's processor (utils/agent.py: ``hasattr(..., "image_processor")``)."""
    return hasattr(tokenizer, "image_processor")


class ImageWeightSyncCheck(WeightSyncCheck):
    """:class:`WeightSyncCheck` whose fixed sequence is an image prompt (module docstring)."""

    def __init__(self, processor, temperature: float, max_len: int, text: str = PROBE_TEXT,
                 engines_sleep: bool = False):
        from openrlhf.utils.vlm_utils import process_prompt_with_images

        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
        prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        token_ids, mm_inputs, images = process_prompt_with_images(processor, prompt, [probe_image()])
        if not mm_inputs:
            raise ValueError("the processor produced no image inputs for the weight-sync probe")
        if len(token_ids) > max_len - 1:  # an image prompt cannot be cut (its placeholders must all stay)
            raise ValueError(
                f"the weight-sync image probe has {len(token_ids)} tokens, more than data.max_len - 1 = "
                f"{max_len - 1}: raise rollout.max_prompt_len or set openrlhf.check_weight_sync: false"
            )
        self.token_ids = token_ids
        self.mm_inputs = mm_inputs
        self.images = images
        self.comparable = temperature == 1.0
        self.before_training = None
        self.engines_sleep = engines_sleep

    def engine_inputs(self) -> dict:
        return {"multi_modal_data": {"image": self.images}}

    def actor_inputs(self) -> dict:
        return {"mm_train_inputs_list": [self.mm_inputs]}


def make_weight_sync_check(tokenizer, temperature: float, max_len: int,
                           engines_sleep: bool = False) -> WeightSyncCheck:
    """The image-prompt check for a vision-language model's processor, else the text check."""
    if is_multimodal_processor(tokenizer):
        return ImageWeightSyncCheck(tokenizer, temperature, max_len, engines_sleep=engines_sleep)
    return WeightSyncCheck(tokenizer, temperature, max_len, engines_sleep=engines_sleep)
