"""Training configuration: schema (pydantic) and YAML loading with ``extends:`` and ``--set``."""

from .loader import ConfigError, apply_overrides, deep_merge, load_config, load_raw, validate
from .schema import AdaptiveSection, AlgorithmSection, TrainConfig

__all__ = [
    "AdaptiveSection",
    "AlgorithmSection",
    "ConfigError",
    "TrainConfig",
    "apply_overrides",
    "deep_merge",
    "load_config",
    "load_raw",
    "validate",
]
