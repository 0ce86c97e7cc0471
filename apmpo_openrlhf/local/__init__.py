"""The local backend: a single-process APMPO/GRPO/DAPO/GMPO trainer (PyTorch + transformers)."""
