"""Hugging Face transformers backend: sampling on CPU for small models and tests.

Text-only: image parts of a prompt are dropped (Geometry3K then sees only its text and choices).
"""

from __future__ import annotations

from .base import Backend, Completion, PromptInput, PromptRenderer, SamplingSettings, is_multimodal_model


class HFBackend(Backend):
    name = "hf"

    def __init__(self, model: str, dtype: str = "auto", max_model_len: int | None = None, batch_size: int = 16,
                 **unused):
        super().__init__(model)
        if is_multimodal_model(model):
            raise ValueError(f"--model {model} is a vision-language model: use --backend vllm (the hf backend is text-only)")
        import torch
        from transformers import AutoModelForCausalLM

        self._torch = torch
        self.renderer = PromptRenderer(model, multimodal=False)
        self.tokenizer = self.renderer.tokenizer
        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
        self.lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype)
        self.lm.eval()
        self.max_model_len = max_model_len
        self.batch_size = batch_size  # sequences per generate() call
        eos = self.lm.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos])
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else next(iter(self.eos_ids))

    def generate(self, prompts: list[PromptInput], seeds: list[int], sampling: SamplingSettings) -> list[list[Completion]]:
        torch = self._torch
        results = []
        for prompt, seed in zip(prompts, seeds):
            ids = torch.tensor([self.renderer.token_ids(self.render(prompt))])
            max_new = sampling.max_tokens
            if self.max_model_len is not None:
                max_new = min(max_new, self.max_model_len - ids.shape[1])
                if max_new < 1:
                    raise ValueError(f"prompt of {ids.shape[1]} tokens does not fit --max-model-len {self.max_model_len}")
            torch.manual_seed(seed)  # per-problem seed: results do not depend on chunking or resume
            completions: list[Completion] = []
            remaining = sampling.n
            while remaining:
                k = min(remaining, self.batch_size)
                with torch.no_grad():
                    out = self.lm.generate(
                        ids, do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0,
                        max_new_tokens=max_new, num_return_sequences=k, pad_token_id=self.pad_id,
                        eos_token_id=list(self.eos_ids),
                    )
                for row in out[:, ids.shape[1]:].tolist():
                    completions.append(self._completion(row))
                remaining -= k
            results.append(completions)
        return results

    def _completion(self, row: list[int]) -> Completion:
        for i, tok in enumerate(row):
            if tok in self.eos_ids:
                return Completion(self.tokenizer.decode(row[:i], skip_special_tokens=True), i + 1, "stop")
        return Completion(self.tokenizer.decode(row, skip_special_tokens=True), len(row), "length")

    def close(self) -> None:
        self.lm = None
