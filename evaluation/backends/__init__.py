"""Generation backends: vLLM offline batch inference (production) and Hugging Face transformers."""

from __future__ import annotations

from .base import Backend, Completion, PromptInput, SamplingSettings

BACKENDS = ("vllm", "hf")


def make_backend(name: str, model: str, **kwargs) -> Backend:
    """Open ``model`` with the backend called ``name`` (one of BACKENDS)."""
    if name == "vllm":
        from .vllm_backend import VLLMBackend

        return VLLMBackend(model, **kwargs)
    if name == "hf":
        from .hf_backend import HFBackend

        kwargs.pop("tensor_parallel_size", None)
        kwargs.pop("gpu_memory_utilization", None)
        return HFBackend(model, **kwargs)
    raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {name!r}")


__all__ = ["BACKENDS", "Backend", "Completion", "PromptInput", "SamplingSettings", "make_backend"]
