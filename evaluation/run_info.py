"""Who a run is in the report: model name, training method, training seed, training run name, run name.

Explicit flags win. Otherwise they are read from the training config saved next to the
checkpoint (the resolved TrainConfig YAML that the trainers write into their output_dir; looked
for in the model folder and up to three folders above it): ``algorithm.loss`` -> method, ``seed`` ->
train seed, the folder name of ``model.path`` -> model name, ``name`` -> training run name (what keeps
an ablation apart from the plain method it modifies). Else: method ``base``, model name = the
model folder's name, train seed and training run name unknown (None). A checkpoint folder's step (global_step100, ...)
is recorded too, so the report keeps checkpoints of one run apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

_STEP_RE = re.compile(r"(?:global_step|checkpoint|step)[-_]?(\d+)", re.IGNORECASE)

TRAIN_CONFIG_NAMES = ("train_config.yaml", "resolved_config.yaml", "config.yaml")


def find_train_config(model_dir: str | Path) -> Path | None:
    here = Path(model_dir).resolve()
    for folder in [here, *list(here.parents)[:3]]:
        for name in TRAIN_CONFIG_NAMES:
            path = folder / name
            if path.is_file():
                try:
                    data = yaml.safe_load(path.read_text())
                except yaml.YAMLError:
                    continue
                if isinstance(data, dict) and isinstance(data.get("algorithm"), dict):
                    return path
    return None


def resolve_run_identity(model_dir: str, *, method: str | None = None, model_name: str | None = None,
                         train_seed: int | None = None, run_name: str | None = None) -> dict:
    source = "flags"
    cfg_path = None
    if method is None or model_name is None or train_seed is None:
        cfg_path = find_train_config(model_dir)
    cfg = yaml.safe_load(cfg_path.read_text()) if cfg_path else {}
    if cfg_path:
        source = str(cfg_path)
    if method is None:
        method = (cfg.get("algorithm") or {}).get("loss") or "base"
    if model_name is None:
        base_model = (cfg.get("model") or {}).get("path")
        model_name = Path(base_model).name if base_model else Path(model_dir).resolve().name
    if train_seed is None and "seed" in cfg:
        train_seed = int(cfg["seed"])
    train_name = cfg.get("name")
    return {"model_name": model_name, "method": method, "train_seed": train_seed,
            "train_name": str(train_name) if train_name is not None else None,
            "checkpoint_step": checkpoint_step(model_dir),
            "run_name": run_name or Path(model_dir).resolve().name, "identity_source": source}


def checkpoint_step(model_dir: str | Path) -> int | None:
    """Training step of a checkpoint folder named like global_step100(_hf), checkpoint-100 or step_100;
    None for a final model or a base model."""
    m = _STEP_RE.search(Path(model_dir).resolve().name)
    return int(m.group(1)) if m else None
