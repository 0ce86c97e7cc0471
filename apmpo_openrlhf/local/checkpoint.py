"""Atomic training checkpoints: everything needed to continue a run bit-for-bit.

One file per saved step, ``<output_dir>/checkpoints/step_XXXXXXXX.pt``, written to a temporary
name and renamed, so a kill never leaves a partial checkpoint behind.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import torch

_NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_dir(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    d = checkpoint_dir(output_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), d / p.name) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir: Path, step: int, state: dict, max_keep: int) -> Path:
    d = checkpoint_dir(output_dir)
    d.mkdir(parents=True, exist_ok=True)
    final = d / f"step_{step:08d}.pt"
    tmp = d / f".step_{step:08d}.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, final)
    for _, old in list_checkpoints(output_dir)[:-max_keep]:
        old.unlink(missing_ok=True)
    return final


def load_latest(output_dir: Path, map_location) -> tuple[int, dict] | None:
    found = list_checkpoints(output_dir)
    if not found:
        return None
    step, path = found[-1]
    return step, torch.load(path, map_location=map_location, weights_only=True)
