"""Model helpers shared by the local trainer, the evaluation harness and the tests."""

from .tiny import build_tiny_model, build_char_tokenizer

__all__ = ["build_tiny_model", "build_char_tokenizer"]
