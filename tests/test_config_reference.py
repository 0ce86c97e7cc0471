"""docs/config.md is generated from the schema: it must list every key, each with a meaning."""

from __future__ import annotations

from pathlib import Path

from apmpo_openrlhf.config.reference import render, rows
from apmpo_openrlhf.config.schema import TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_docs_config_md_is_up_to_date():
    assert (REPO_ROOT / "docs" / "config.md").read_text() == render(), (
        "docs/config.md is stale: run python -m apmpo_openrlhf.config.reference --out docs/config.md"
    )


def test_every_key_is_documented_and_round_trips():
    table = rows(TrainConfig)
    undocumented = [key for key, _, _, _, desc in table if not desc]
    assert not undocumented, f"config keys without a description: {undocumented}"
    dumped = TrainConfig().model_dump()
    for key, typ, *_ in table:
        node = dumped
        for part in key.split("."):
            assert part in node, f"{key} listed in the reference but absent from the schema dump"
            node = node[part]
            if node is None:  # an optional section (e.g. logging.wandb) that is off by default
                break
