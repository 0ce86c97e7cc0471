"""Suite-wide settings: offline hubs, caches outside the checkout, the shared data directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")
_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "apmpo_openrlhf"
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(_cache / "torch_extensions"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(_cache / "inductor"))
os.environ.setdefault("VLLM_CACHE_ROOT", str(_cache / "vllm"))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
# Tests read the real benchmark files from ../shared/data unless the user points elsewhere.
os.environ.setdefault("APMPO_DATA_DIR", str(SHARED_DATA))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The benchmark data directory; tests that need it skip with a reason when it is absent."""
    path = Path(os.environ["APMPO_DATA_DIR"])
    if not path.is_dir():
        pytest.skip(f"benchmark data directory {path} is absent (set APMPO_DATA_DIR to its location)")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny randomly initialised Llama + char tokenizer saved as a Hugging Face directory."""
    from apmpo_openrlhf.models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model") / "model")
