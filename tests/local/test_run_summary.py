"""The end-of-run summary: curve statistics on known curves, and the text of a real short run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from apmpo_openrlhf.local.metrics import format_summary, moving_average, reward_curve_stats, run_summary
from apmpo_openrlhf.local.trainer import run


def test_moving_average_is_trailing():
    assert moving_average([0, 2, 4, 6], 2) == [0, 1, 3, 5]


def test_curve_stats_on_a_known_curve():
    # 100 steps: 0.1 for 10 steps, 1.0 after, with a 5-step dip to 0 at steps 80-84.
    curve = [0.1] * 10 + [1.0] * 70 + [0.0] * 5 + [1.0] * 15
    s = reward_curve_stats(curve, window=20)
    assert s["first"] == pytest.approx(0.1) and s["last"] == pytest.approx(1.0) and s["edge_steps"] == 10
    assert s["tail_min_smoothed"] == pytest.approx(0.75)  # 15 of 20 steps at 1.0
    assert reward_curve_stats([0.5])["first"] == 0.5
    with pytest.raises(ValueError, match="rewards"):
        reward_curve_stats([])


def test_a_run_ends_with_a_summary(small_config, capsys):
    cfg = small_config("max_steps=3", "eval.at_step0=true", "eval.every_steps=2", "eval.n_samples_per_prompt=1")
    assert run(cfg) == 0
    err = capsys.readouterr().err
    out = Path(cfg.output_dir)
    summary = json.loads((out / "summary.json").read_text())
    # eval at step 0, 2, and at the last step (3 is off the every-2 schedule)
    assert [e[0] for e in summary["eval"]] == [0, 2, 3]
    assert summary["wall_s"] > 0 and summary["train_s"] > 0
    text = format_summary(run_summary(out))
    assert "summary of 3 steps" in err and "eval reward" in err and "eps_high" in err
    assert text.splitlines()[0] == "summary of 3 steps"
    assert str(out) in err and "final_model/" in err


def test_time_per_stage_from_the_timing_columns(tmp_path):
    """The OpenRLHF backend logs timing/<stage> per step: the summary sums them, shows reward grading
    inside generation (it runs in the engines while they generate) and leaves step_total out."""
    rows = [{"step": s, "reward_mean": 0.1 * s, "p": 0.9, "eps_high": 0.3, "elapsed_s": 2.0 * s,
             "timing/generation": 1.0, "timing/reward_grading": 0.05, "timing/make_experience": 0.25,
             "timing/ppo_train": 0.5, "timing/broadcast": 0.25, "timing/step_total": 2.0} for s in (1, 2, 3, 4)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "eval.jsonl").write_text(json.dumps({"step": 0, "eval_reward_mean": 0.05}) + "\n")
    s = run_summary(tmp_path, wall_s=30.0)
    assert s["stages"] == {"generation": 4.0, "reward_grading": pytest.approx(0.2), "make_experience": 1.0,
                           "ppo_train": 2.0, "broadcast": 1.0}
    text = format_summary(s)
    assert ("time per stage  generation 4 s (reward grading 0.2 s inside it), experience making 1 s, training 2 s, "
            "weight broadcast 1 s") in text
    assert "token entropy" not in text  # not logged here
    assert "stages" not in run_summary(_write(tmp_path / "plain", [{"step": 1, "reward_mean": 0.5}]))


def _write(out: Path, rows: list[dict]) -> Path:
    out.mkdir()
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out
