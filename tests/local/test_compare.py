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


def _fake_run(seed: int, pass1: float, samples_per_step: int, steps: int = 3) -> dict:
    rows = [{"step": i + 1, "reward_mean": 0.5, "entropy": 0.3, "clip_frac_high": 0.0, "clip_frac_low": 0.0,
             "step_time_s": 0.1, "elapsed_s": 0.1 * (i + 1), "samples_generated": samples_per_step,
             "samples_generated_total": samples_per_step * (i + 1)} for i in range(steps)]
    return {"seed": seed, "rows": rows, "warmstart": None, "heldout_curve": [],
            "heldout": {"n_samples": 4, "pass_at_k": {"1": pass1, "4": pass1 + 0.1}}}


def test_group_pairs_and_contrasts_are_paired_by_seed():
    """A group's pairs keep its orientation; a contrast is mean(plus) - mean(minus) per seed, then tested
    like a pair (exact sign-flip over seeds)."""
    group = compare.MethodGroup(help="h", methods={"c": {}, "d": {}}, pairs=[("b", "a")],
                                contrasts={"cd_vs_ab": compare.Contrast(plus=["c", "d"], minus=["a", "b"])})
    base = {"a": 0.1, "b": 0.2, "c": 0.4, "d": 0.6}
    details = {m: [_fake_run(s, v + 0.01 * s, 256 if m == "d" else 64) for s in range(6)] for m, v in base.items()}
    analysis = compare.analyse(details, {"g": group})
    g = analysis["groups"]["g"]
    (pair,) = g["pairs"]
    assert (pair["a"], pair["b"]) == ("b", "a") and pair["heldout_pass@1"]["mean_diff"] == pytest.approx(0.1)
    (c,) = g["contrasts"]
    assert c["heldout_pass@1"]["mean_diff"] == pytest.approx((0.4 + 0.6) / 2 - (0.1 + 0.2) / 2)
    assert c["heldout_pass@1"]["wins"] == 6 and c["heldout_pass@1"]["p_sign_flip"] == pytest.approx(1 / 32)
    assert analysis["methods"]["d"]["per_seed"][0]["samples_generated_total"] == 768
    text = compare.summary_testbed(analysis)
    assert "## Group `g`" in text and "| cd_vs_ab (+) | cd_vs_ab (-) |" in text
    assert "## Generated samples per run" in text and "| d | 3 / 768 |" in text
    assert "768 ± 0" in text  # samples generated column of the per-method table
