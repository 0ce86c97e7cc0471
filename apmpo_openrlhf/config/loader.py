"""Load a YAML config (with ``extends:``), apply ``--set key=value`` overrides, validate.

Errors are :class:`ConfigError` with one line per problem, naming the key, the value given and
what is allowed.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .schema import TrainConfig


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key, the value and the rule."""


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def deep_merge(base: dict, override: dict) -> dict:
    """Mappings merge recursively; any other value in ``override`` replaces the base value."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_raw(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict:
    """Read ``path`` and everything it ``extends`` (paths relative to the file), merged in order."""
    path = Path(path).resolve()
    if path in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, path))
        raise ConfigError(f"extends: cycle in config inheritance: {cycle}")
    data = _read_yaml(path)
    parents = data.pop("extends", None)
    if parents is None:
        return data
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"{path}: extends must be a path or a list of paths, got {parents!r}")
    merged: dict = {}
    for parent in parents:
        merged = deep_merge(merged, load_raw(path.parent / parent, (*_chain, path)))
    return deep_merge(merged, data)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML: numbers, bools, null, lists)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set algorithm.loss=grpo")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    data = copy.deepcopy(data)
    for item in overrides or []:
        parts, value = parse_override(item)
        node = data
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the section that ``loc`` (a pydantic error location) points into."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = ".".join(str(p) for p in loc) or "<root>"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(TrainConfig, loc)
            lines.append(f"  {key}: unknown key; allowed keys here: {', '.join(allowed)}")
            continue
        value = e.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {key} = {shown}: {msg}")
    return "\n".join(lines)


def validate(data: dict, source: str = "config") -> TrainConfig:
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Load ``path`` (or an empty config: every default) with ``--set`` overrides, validated."""
    raw = load_raw(path) if path is not None else {}
    raw = apply_overrides(raw, overrides)
    return validate(raw, str(path) if path is not None else "defaults")


TRAIN_CONFIG_FILE = "train_config.yaml"


def save_config(cfg: TrainConfig, path: str | Path) -> Path:
    """Write the resolved config as YAML (every key, defaults included) atomically: a crash mid-write
    never leaves a truncated file that the evaluation harness would read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it owner-only; a config is for everyone who evaluates the run
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
