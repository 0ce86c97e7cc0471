"""``python -m apmpo_openrlhf.config.reference``: the configuration reference, generated from the
schema (every key, its type, default, allowed range and meaning) as Markdown.

docs/config.md is this command's output; a test keeps it in sync with the schema.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .schema import TrainConfig


def _is_section(annotation: Any) -> type[BaseModel] | None:
    candidates = [annotation, *typing.get_args(annotation)]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(annotation)).replace("'", "`")
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _range(metadata: list) -> str:
    parts = []
    for m in metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(m, attr, None)
            if isinstance(m, annotated_types.BaseMetadata) and value is not None:
                parts.append(f"{sym} {value}")
    return ", ".join(parts)


def _default(field) -> str:
    if field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return ""
        if isinstance(value, BaseModel):
            return ""
    else:
        value = field.default
    if value is PydanticUndefined:
        return "(required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value!r}`".replace("'", "")


def rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str, str]]:
    """(key, type, default, range, description) for every leaf key, depth first."""
    out = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _is_section(field.annotation)
        if section is not None and section is not model:
            optional = type(None) in typing.get_args(field.annotation)
            if optional:
                out.append((key, "section \\| null", _default(field), "", field.description or ""))
            out.extend(rows(section, key + "."))
            continue
        out.append((key, _type_name(field.annotation), _default(field), _range(field.metadata), field.description or ""))
    return out


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the schema by `python -m apmpo_openrlhf.config.reference` (do not edit by hand).",
        "Set keys in a YAML file (`--config`, with `extends:` for shared settings) or on the command",
        "line (`--set key=value`, repeatable). Unknown keys, wrong types and out-of-range values are",
        "rejected with a message naming the key. `--dry-run` prints the resolved config.",
        "",
    ]
    current = None
    for key, typ, default, rng, desc in rows(TrainConfig):
        section = key.split(".")[0] if "." in key else "(top level)"
        if section != current:
            current = section
            lines += ["", f"## `{section}`" if section != "(top level)" else "## Top level", "",
                      "| key | type | default | allowed | meaning |", "| --- | --- | --- | --- | --- |"]
        lines.append(f"| `{key}` | {typ} | {default} | {rng} | {desc} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m apmpo_openrlhf.config.reference",
        description="Print the configuration reference (every key of the training config) as Markdown.",
    )
    parser.add_argument("--out", help="write to this file instead of standard output")
    args = parser.parse_args(argv)
    text = render()
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
