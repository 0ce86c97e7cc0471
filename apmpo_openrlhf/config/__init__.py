"""Training configuration: schema (pydantic) and YAML loading with ``extends:`` and ``--set``."""

from .loader import (
    TRAIN_CONFIG_FILE,
    ConfigError,
    apply_overrides,
    deep_merge,
    load_config,
    load_raw,
    save_config,
    validate,
)
from .schema import AdaptiveSection, AlgorithmSection, TrainConfig

__all__ = [
    "AdaptiveSection",
    "AlgorithmSection",
    "TRAIN_CONFIG_FILE",
    "ConfigError",
    "TrainConfig",
    "apply_overrides",
    "deep_merge",
    "load_config",
    "load_raw",
    "save_config",
    "validate",
]
