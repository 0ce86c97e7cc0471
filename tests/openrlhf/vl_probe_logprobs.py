"""Hugging Face log-probs of the weight-sync image probe, for test_vl_loop.py (run as a script in a
fresh process: the CPU backend's torchvision stand-in must be importable before transformers is
imported, as in every process of the loop).

    python tests/openrlhf/vl_probe_logprobs.py MODEL VISION_FROM

prints a JSON object: ``model``, the probe's token log-probs under MODEL, and ``stale``, the same
with MODEL's vision tower and merger replaced by VISION_FROM's (what an engine that kept image
embeddings from VISION_FROM's encoder would compute). The forwards get ``mm_token_type_ids``
(M-RoPE positions).
"""

from __future__ import annotations

import json
import sys

from apmpo_openrlhf.openrlhf_adapter import vision_standin

vision_standin.install()

import torch  # noqa: E402
from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402

from apmpo_openrlhf.openrlhf_adapter.image_weight_sync import ImageWeightSyncCheck  # noqa: E402


def probe_log_probs(model, probe) -> list[float]:
    ids = torch.tensor([probe.token_ids])
    inputs = dict(probe.mm_inputs)
    inputs["mm_token_type_ids"] = (ids == model.config.image_token_id).to(torch.int32)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **inputs).logits.float()
    return logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1).double().tolist()


def main(model_dir: str, vision_from: str) -> dict[str, list[float]]:
    processor = AutoProcessor.from_pretrained(model_dir)
    probe = ImageWeightSyncCheck(processor, temperature=1.0, max_len=10_000)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    result = {"model": probe_log_probs(model, probe)}
    other = AutoModelForImageTextToText.from_pretrained(vision_from, dtype=torch.float32)
    model.model.visual.load_state_dict(other.model.visual.state_dict())  # Qwen2.5-VL: tower + merger
    result["stale"] = probe_log_probs(model, probe)
    return result


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:3])))
