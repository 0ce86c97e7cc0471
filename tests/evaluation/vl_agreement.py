"""The harness's vLLM backend vs a Hugging Face forward on Geometry3K image prompts (for
test_vl_eval.py; run as a script in a fresh process, like ``python -m evaluation.run``).

    python tests/evaluation/vl_agreement.py MODEL DATA_DIR

For the first problems of Geometry3K, the prompt exactly as the harness sends it to vLLM
(``engine_input``: the rendered chat text plus the RGB diagram) followed by a fixed answer is scored
by vLLM (``prompt_logprobs``) and by transformers (the model's processor on the same text and image,
forward with ``mm_token_type_ids``, i.e. M-RoPE positions; and once without them, the silent 1-D
fallback). Prints a JSON object with the largest differences and the token counts.
"""

from __future__ import annotations

import json
import sys

from apmpo_openrlhf.openrlhf_adapter import vision_standin

vision_standin.install()

import torch  # noqa: E402

from evaluation.backends.vllm_backend import VLLMBackend, engine_input  # noqa: E402
from evaluation.benchmarks import LoadOptions, load_benchmark  # noqa: E402

ANSWER = "\\boxed{B}"
PROBLEMS = 2


def hf_log_probs(model, ids: torch.Tensor, inputs: dict, with_token_types: bool) -> torch.Tensor:
    inputs = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "mm_token_type_ids")}
    if with_token_types:
        inputs["mm_token_type_ids"] = (ids == model.config.image_token_id).to(torch.int32)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **inputs).logits.double()
    return logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1)


def main(model_dir: str, data_dir: str) -> dict:
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from vllm import SamplingParams

    problems = load_benchmark("geometry3k", LoadOptions(data_dir=data_dir, limit=PROBLEMS)).problems
    backend = VLLMBackend(model_dir, dtype="float32", enforce_eager=True, max_model_len=1024)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32).eval()
    result = {"max_abs_diff": 0.0, "max_abs_diff_without_mrope": 0.0, "tokens": [], "image_tokens": []}
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
    for problem in problems:
        request = engine_input(backend.renderer, problem.prompt)
        request["prompt"] += ANSWER
        [output] = backend.llm.generate([request], params, use_tqdm=False)
        ids = torch.tensor([output.prompt_token_ids])
        engine = torch.tensor([step[t].logprob for step, t in zip(output.prompt_logprobs[1:], output.prompt_token_ids[1:])],
                              dtype=torch.float64)
        image = request["multi_modal_data"]["image"]
        inputs = processor(text=[request["prompt"]], images=[image], return_tensors="pt", add_special_tokens=False)
        assert inputs["input_ids"].tolist() == ids.tolist(), "vLLM and the processor expanded the image differently"
        for key, with_types in (("max_abs_diff", True), ("max_abs_diff_without_mrope", False)):
            diff = float((hf_log_probs(model, ids, inputs, with_types) - engine).abs().max())
            result[key] = max(result[key], diff)
        result["tokens"].append(ids.shape[1])
        result["image_tokens"].append(int((ids == model.config.image_token_id).sum()))
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
