"""`python -m apmpo_openrlhf.compare` end to end (tiny runs) and its config handling."""

from __future__ import annotations

import pytest
import yaml

from apmpo_openrlhf import compare


def test_flatten_turns_nested_overrides_into_set_pairs():
    assert compare.flatten({"algorithm": {"loss": "dapo", "dynamic_filtering": True}, "seed": 3}) == [
        "algorithm.loss=dapo", "algorithm.dynamic_filtering=true", "seed=3",
    ]


def test_bad_compare_config_names_the_key(tmp_path, capsys):
    bad = tmp_path / "compare.yaml"
    bad.write_text(yaml.safe_dump({"methods": {"grpo": {"algorithm": {"loss": "grpo"}}}, "seedz": [1]}))
    assert compare.main(["--config", str(bad), "--plots-only"]) == 2
    assert "seedz" in capsys.readouterr().err
    # A method override that the training schema rejects is reported before anything runs.
    bad.write_text(yaml.safe_dump({"base": str(compare.DEFAULT_COMPARE.parent / "default.yaml"),
                                   "methods": {"x": {"algorithm": {"loss": "ppo"}}}}))
    assert compare.main(["--config", str(bad), "--plots-only"]) == 2
    assert "algorithm.loss" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_runs_methods_and_draws_the_figures(tmp_path, small_overrides):
    out = tmp_path / "cmp"
    sets = [s for s in small_overrides if not s.startswith(("local.num_threads", "local.progress_bar"))]
    argv = ["--output-dir", str(out), "--methods", "grpo", "apmpo", "--seeds", "0", "--workers", "2"]
    for s in [*sets, "max_steps=2"]:
        argv += ["--set", s]
    assert compare.main(argv) == 0
    for name in ("figure1.png", "adaptive.png", "summary.md"):
        assert (out / name).stat().st_size > 0
    text = (out / "summary.md").read_text()
    assert "| grpo | 1 |" in text and "| apmpo | 1 |" in text
    assert len((out / "apmpo" / "seed_0" / "metrics.jsonl").read_text().splitlines()) == 2
    # Finished runs are not repeated: a second call only redraws.
    mtime = (out / "grpo" / "seed_0" / "metrics.jsonl").stat().st_mtime
    assert compare.main(argv) == 0
    assert (out / "grpo" / "seed_0" / "metrics.jsonl").stat().st_mtime == mtime
