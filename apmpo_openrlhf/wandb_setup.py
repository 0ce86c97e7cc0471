"""Weights & Biases for both backends: the effective mode, the credentials check, the run identity.

A run configured for online W&B without credentials used to fail late: the local backend after the
model was built, the OpenRLHF backend inside the trainer actor after the engines started (OpenRLHF
logs in with whatever key its ``--logger.wandb.key`` holds). :func:`check_credentials` refuses it
before anything starts. Both backends write offline runs under ``<output_dir>/wandb/`` and keep one
W&B run id per output directory (``<output_dir>/wandb_run_id``), so a resumed run continues it.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from .config import ConfigError, TrainConfig

RUN_ID_FILE = "wandb_run_id"


def effective_mode(cfg: TrainConfig) -> str | None:
    """None (no ``logging.wandb``), or the mode W&B runs in: the config's, unless ``WANDB_MODE=disabled``
    is set in the environment (tests, or a user switching W&B off for one run)."""
    if cfg.logging.wandb is None:
        return None
    if os.environ.get("WANDB_MODE") == "disabled":
        return "disabled"
    return cfg.logging.wandb.mode


def has_credentials() -> bool:
    """A W&B API key is configured here (``WANDB_API_KEY``, or the ``~/.netrc`` entry that ``wandb login``
    writes for the W&B host), checked without a prompt, a network call or wandb's process-wide settings
    (which keep the first answer for the rest of the process)."""
    if os.environ.get("WANDB_API_KEY", "").strip():
        return True
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        entry = netrc.netrc(path).authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(entry and entry[2])


def check_credentials(cfg: TrainConfig) -> None:
    """Refuse an online W&B run without credentials, before anything starts (both backends)."""
    if effective_mode(cfg) != "online":
        return
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise ConfigError("logging.wandb is set but the wandb package is not installed (pip install wandb)") from None
    if not has_credentials():
        hint = ("on every Ray node before `ray start` (the trainer actor logs from one of them)"
                if cfg.backend == "openrlhf" else "before starting")
        raise ConfigError(
            f"logging.wandb.mode = 'online' needs a W&B API key: set WANDB_API_KEY or run `wandb login` {hint}; "
            "or use logging.wandb.mode: offline (synced later with `wandb sync <output_dir>/wandb/offline-run-*`) "
            "or disabled"
        )


def run_id(output_dir: str | Path) -> str:
    """One W&B run per output directory, so that a resumed run continues the same W&B run."""
    path = Path(output_dir) / RUN_ID_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = uuid.uuid4().hex[:12]
    path.write_text(value)
    return value


def worker_env(cfg: TrainConfig) -> dict[str, str]:
    """Environment of the OpenRLHF backend's Ray workers for W&B: its mode, its directory (the run's
    files under ``<output_dir>/wandb/``, not the worker's working directory) and the run id to resume."""
    mode = effective_mode(cfg)
    if mode is None:
        return {}
    env = {"WANDB_MODE": mode}
    if mode != "disabled":
        out = Path(cfg.output_dir).resolve()
        env.update(WANDB_DIR=str(out), WANDB_RUN_ID=run_id(out), WANDB_RESUME="allow")
    return env
