"""The testbed of `python -m apmpo_openrlhf.compare --preset testbed` (issue #11): task family and
split, exact reward, warm start, held-out Pass@k, the statistics, and the preset at reduced size
(pipeline and files, not the scientific result)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from apmpo_openrlhf import compare
from apmpo_openrlhf.config import ConfigError, load_config
from apmpo_openrlhf.local.heldout_eval import pass_at_k_curve
from apmpo_openrlhf.rewards.registry import get_reward, grade_label
from apmpo_openrlhf.stats import compare_pair, min_sign_flip_p, paired_bootstrap_ci, sign_flip_test, t_interval
from apmpo_openrlhf.tasks import arithmetic_problems, split_problems

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTBED = REPO_ROOT / "configs" / "local" / "testbed.yaml"

# A much smaller testbed: operands 0-9 (100 problems), few warm-start checks, tiny model.
TINY = [
    "local.task.max_operand=9",
    "local.task.max_answer=18",
    "local.tiny_model.hidden_size=32",
    "local.tiny_model.intermediate_size=64",
    "local.warmstart.target_accuracy=0.05",
    "local.warmstart.check_samples=32",
    "local.warmstart.check_every=5",
    "local.warmstart.max_steps=30",
    "local.heldout_eval.n_samples=4",
    "local.heldout_eval.every_steps=null",
    "rollout.prompts_per_step=8",
    "rollout.n_samples_per_prompt=4",
    "train.train_batch_size=16",
    "train.micro_batch_size=16",
    "logging.tensorboard=false",
]


def test_multi_operand_problems_evaluate_left_to_right():
    problems = dict(arithmetic_problems(0, 9, ["+", "-"], 99, num_operands=3))
    assert problems["9-3+2="] == "8" and problems["1+2+3="] == "6"
    # only the final answer is range-checked: 1-2+3 = 2 is kept, 1-2-3 = -4 is not
    assert problems["1-2+3="] == "2" and "1-2-3=" not in problems
    two_digit = arithmetic_problems(0, 49, ["+"], 98)
    assert len(two_digit) == 2500 and ("23+41=", "64") in two_digit
    with pytest.raises(ValueError, match="num_operands"):
        arithmetic_problems(0, 9, ["+"], 9, num_operands=1)


def test_split_is_disjoint_seeded_and_covers_every_problem():
    problems = arithmetic_problems(0, 49, ["+"], 98)
    s = split_problems(problems, 0.2, 0.4, split_seed=0)
    assert len(s["heldout"]) == 500 and len(s["train"]) == 2000 and len(s["warmstart"]) == 1000
    assert not set(s["heldout"]) & set(s["train"])
    assert set(s["warmstart"]) <= set(s["train"])
    assert set(s["heldout"]) | set(s["train"]) == set(problems)
    assert split_problems(problems, 0.2, 0.4, split_seed=0) == s
    assert split_problems(problems, 0.2, 0.4, split_seed=1)["heldout"] != s["heldout"]
    # no held-out fraction: the training split is the whole task in its original order (the default run)
    assert split_problems(problems)["train"] == problems


def test_trainer_draws_training_problems_only_and_evaluates_the_heldout_split():
    from apmpo_openrlhf.local.data import build_eval_prompts, build_prompt_source, task_splits

    cfg = load_config(TESTBED, ["output_dir=/tmp/unused"])
    held = {q for q, _ in task_splits(cfg)["heldout"]}
    drawn = build_prompt_source(cfg).sample(2000)
    assert not {r["prompt"] for r in drawn} & held
    assert drawn[0]["label"]["task"] == "arithmetic_exact"
    assert {r["prompt"] for r in build_eval_prompts(cfg)} == held


def test_exact_reward_checks_the_whole_answer():
    f = get_reward("arithmetic_exact")
    assert f("64", "64") == 1.0 and f(" 64 ", "64") == 1.0
    for wrong in ("640", "6", "064", "64+1", "64 65", "", "x64"):
        assert f(wrong, "64") == 0.0, wrong
    assert f(None, "64") == 0.0 and f("6" * 1000, "6") == 0.0
    # the first-integer reward would accept "640 ..." prefixes differently: the exact one rejects "64 is it"
    assert get_reward("arithmetic")("64 is it", "64") == 1.0 and f("64 is it", "64") == 0.0
    assert grade_label("12", {"task": "arithmetic_exact", "answer": "12"})[0] == 1.0


def test_sign_flip_and_bootstrap_on_known_inputs():
    # all 5 differences positive: only the all-plus and all-minus patterns are as extreme
    assert sign_flip_test([1, 2, 3, 4, 5], [0, 0, 0, 0, 0]) == pytest.approx(2 / 32) == min_sign_flip_p(5)
    assert min_sign_flip_p(6) == pytest.approx(1 / 32)
    # d = (+1, -1): every pattern has |mean| >= 0
    assert sign_flip_test([1, 0], [0, 1]) == 1.0
    # d = (3, 1, -1): patterns with |mean| >= 1: |3+1-1|, |3-1+1|... enumerate by hand: 6 of 8
    assert sign_flip_test([3, 1, -1], [0, 0, 0]) == pytest.approx(6 / 8)
    mean, lo, hi = paired_bootstrap_ci([1.0, 1.0, 1.0], [0.0, 0.0, 0.0])
    assert (mean, lo, hi) == (1.0, 1.0, 1.0)
    mean, lo, hi = paired_bootstrap_ci([0.1, 0.5, 0.3, 0.2], [0.0, 0.0, 0.0, 0.0], seed=3)
    assert mean == pytest.approx(0.275) and 0.1 <= lo < mean < hi <= 0.5
    c = compare_pair([0.6, 0.7, 0.5], [0.5, 0.7, 0.6])
    assert (c["wins"], c["losses"], c["ties"], c["n"]) == (1, 1, 1, 3)
    m, h = t_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)
    assert t_interval([5.0]) == (5.0, 0.0)


def test_pass_at_k_curve_uses_the_unbiased_estimator():
    curve = pass_at_k_curve([0, 2, 4], 4)
    assert curve["1"] == pytest.approx((0 + 0.5 + 1) / 3)
    assert curve["4"] == pytest.approx(2 / 3)
    assert curve["2"] == pytest.approx((0 + (1 - 1 / 6) + 1) / 3)  # c=2 of 4: 1 - C(2,2)/C(4,2)


def test_warm_start_is_deterministic_and_cached(tmp_path):
    from apmpo_openrlhf.local.trainer import Trainer

    def build(name):
        return Trainer(load_config(TESTBED, [*TINY, f"output_dir={tmp_path / name}"]))

    a, b = build("a"), build("b")
    assert a.warmstart["steps"] > 0 and a.warmstart["steps"] == b.warmstart["steps"]
    assert a.warmstart["accuracy"] == b.warmstart["accuracy"]
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    info = tmp_path / "a" / "warmstart" / "info.json"
    mtime = info.stat().st_mtime_ns
    c = build("a")  # cached: loaded, not retrained
    assert info.stat().st_mtime_ns == mtime and c.warmstart == json.loads(info.read_text())
    for va, vc in zip(a.model.state_dict().values(), c.model.state_dict().values()):
        assert torch.equal(va, vc)


@pytest.mark.slow
def test_testbed_preset_at_reduced_size(tmp_path):
    out = tmp_path / "tb"
    argv = ["--preset", "testbed", "--group", "compute_matched", "--methods", "grpo", "dapo", "dapo_matched",
            "--seeds", "0", "1", "--workers", "2", "--output-dir", str(out)]
    for s in [*TINY, "max_steps=4", "local.heldout_eval.every_steps=2", "checkpoint.save_steps=2"]:
        argv += ["--set", s]
    assert compare.main(argv) == 0
    for name in ("figure1.png", "adaptive.png", "heldout.png", "summary.md", "results.json",
                 "figure1_compute_matched.png", "heldout_compute_matched.png"):
        assert (out / name).stat().st_size > 0, name
    held = json.loads((out / "dapo" / "seed_1" / "heldout.json").read_text())
    assert held["step"] == 4 and held["n_samples"] == 4 and set(held["pass_at_k"]) == {"1", "2", "3", "4"}
    rows = [json.loads(x) for x in (out / "grpo" / "seed_0" / "heldout.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2, 4]
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"grpo", "dapo", "dapo_matched"}
    assert results["methods"]["grpo"]["seeds"] == [0, 1]
    assert len(results["pairs"]) == 3 and results["pairs"][0]["heldout_pass@1"]["n"] == 2
    # generated samples per run: 8 prompts x 4 samples per step without dynamic sampling, more with it
    per_seed = results["methods"]["grpo"]["per_seed"]
    assert [per_seed[s]["samples_generated_total"] for s in ("0", "1")] == [128, 128]
    assert results["methods"]["dapo"]["mean"]["samples_generated_total"] >= 128
    # the group's own comparisons (those whose methods ran: dapo_matched vs grpo, dapo vs dapo_matched)
    group = results["groups"]["compute_matched"]
    assert [(p["a"], p["b"]) for p in group["pairs"]] == [("dapo_matched", "grpo"), ("dapo", "dapo_matched")]
    text = (out / "summary.md").read_text()
    assert "| grpo | 2 |" in text and "held-out Pass@1" in text and "- grpo vs dapo:" in text
    assert "sign-flip" in text and "## Group `compute_matched`" in text and "## Generated samples per run" in text
    # finished runs are skipped: a rerun only redraws
    mtime = (out / "grpo" / "seed_0" / "heldout.json").stat().st_mtime_ns
    assert compare.main(argv) == 0
    assert (out / "grpo" / "seed_0" / "heldout.json").stat().st_mtime_ns == mtime


def test_presets_and_ablation_methods_validate(capsys):
    assert compare.main(["--preset", "toy", "--ablations", "--plots-only"]) == 2
    assert "no ablations" in capsys.readouterr().err
    cc = compare.load_compare_config(compare.PRESETS["testbed"])
    assert set(cc.methods) == {"grpo", "dapo", "gmpo", "apmpo"} and set(cc.ablations) == {"grpo_fac", "grpo_pmpo"}
    runs = compare.plan_runs(cc, compare.PRESETS["testbed"], ["grpo_fac", "grpo_pmpo"], [0], [])
    fac, pmpo = (load_config(r["base"], r["sets"]).algorithm for r in runs)
    assert fac.loss == pmpo.loss == "apmpo"
    assert (fac.adaptive.p_schedule, fac.adaptive.p_fixed, fac.adaptive.eps_schedule) == ("fixed", 1.0, "tanh")
    assert (pmpo.adaptive.eps_schedule, pmpo.adaptive.eps_fixed, pmpo.adaptive.p_schedule) == ("fixed", 0.2, "exp")
    # the paper's hyper-parameters are untouched (schema defaults)
    assert (fac.adaptive.gamma, fac.adaptive.eps_min, fac.adaptive.eps_max) == (0.8, 0.2, 0.4)


def test_testbed_groups_plan_dapos_parts_and_the_compute_matched_runs(tmp_path, capsys):
    """Issue #21's study: every variant is its method with the keys its loss reads, nothing else changed."""
    path = compare.PRESETS["testbed"]
    cc = compare.load_compare_config(path)
    assert set(cc.groups) == {"dapo_parts", "compute_matched"}
    names = [*cc.groups["dapo_parts"].methods, *cc.groups["compute_matched"].methods]
    runs = compare.plan_runs(cc, path, names, [0], [])
    alg = {r["method"]: load_config(r["base"], r["sets"]).algorithm for r in runs}
    budget = {r["method"]: r["budget"] for r in runs}
    cells = {  # (loss, eps_high, dynamic sampling)
        "grpo_tokenmean": ("dapo", 0.2, False), "grpo_cliphigher": ("grpo", 0.28, False),
        "grpo_ds": ("grpo", None, True), "dapo_no_ds": ("dapo", None, False),
        "grpo_tokenmean_ds": ("dapo", 0.2, True), "grpo_cliphigher_ds": ("grpo", 0.28, True),
        "apmpo_ds": ("apmpo", None, True), "dapo_matched": ("dapo", None, True),
        "grpo_ds_matched": ("grpo", None, True), "apmpo_ds_matched": ("apmpo", None, True),
        "grpo_2x": ("grpo", None, False), "dapo_no_ds_2x": ("dapo", None, False), "apmpo_2x": ("apmpo", None, False),
    }
    for name, (loss, eps_high, ds) in cells.items():
        assert (alg[name].loss, alg[name].eps_high, alg[name].dynamic_filtering) == (loss, eps_high, ds), name
        assert alg[name].eps_low == 0.2 and alg[name].adaptive.gamma == 0.8  # the methods' own values
    # the compute-matched runs: GRPO's 400 steps of 32 x 8 samples (_matched) or DAPO's two rounds per step (_2x)
    assert {m: b for m, b in budget.items() if b is not None} == {
        m: 32 * 8 * 400 * (2 if m.endswith("_2x") else 1) for m in names if m.endswith(("_matched", "_2x"))}
    assert {r["max_steps"] for r in runs if r["method"].endswith("_2x")} == {2000}  # the budget ends them
    # the three main effects split the 2x2x2 design (grpo, dapo and six parts) in halves that differ in one part
    design = {"grpo": (0, 0, 0), "dapo": (1, 1, 1)} | {
        n: (int(ds), int(e == 0.28 or (loss == "dapo" and e is None)), int(loss == "dapo"))
        for n, (loss, e, ds) in cells.items() if n.startswith(("grpo_", "dapo_no")) and not n.endswith(("_matched", "_2x"))}
    contrasts = cc.groups["dapo_parts"].contrasts
    for i, factor in enumerate(("dynamic_sampling", "clip_higher", "token_level")):
        c = contrasts[factor]
        assert sorted(c.plus + c.minus) == sorted(design)
        assert all(design[m][i] == 1 for m in c.plus) and all(design[m][i] == 0 for m in c.minus), factor
    # --group selects a study; unknown groups, duplicate names and dangling pairs are refused before any run
    assert compare.main(["--preset", "testbed", "--group", "nope", "--plots-only"]) == 2
    assert "--group nope" in capsys.readouterr().err
    for groups, message in (({"g": {"help": "x", "methods": {"grpo": {}}}}, "defined twice"),
                            ({"g": {"help": "x", "methods": {"y": {}}, "pairs": [["y", "zzz"]]}}, "not methods of this")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({"methods": {"grpo": {"algorithm": {"loss": "grpo"}}}, "groups": groups}))
        with pytest.raises(ConfigError, match=message):
            compare.load_compare_config(bad)
    parser_help = compare.build_parser().format_help()
    assert "--group dapo_parts" in parser_help and "--group compute_matched" in parser_help


def test_generated_samples_are_counted_and_a_budget_stops_training(small_config, capsys):
    """samples_generated counts every response sampled for training (dynamic sampling's refill rounds too,
    held-out sampling not); local.max_generated_samples ends the run after the step that reaches it, with
    the end-of-run held-out evaluation and checkpoint, and a rerun trains nothing."""
    from apmpo_openrlhf.local.checkpoint import list_checkpoints
    from apmpo_openrlhf.local.metrics import read_metrics
    from apmpo_openrlhf.local.trainer import Trainer

    common = ["checkpoint.save_hf=false", "checkpoint.save_steps=100", "max_steps=100",
              "local.heldout_eval.at_end=true", "local.heldout_eval.n_samples=2"]
    # without dynamic sampling: 8 prompts x 8 samples per step, so a budget of 128 is exactly 2 steps
    trainer = Trainer(small_config(*common, "algorithm.loss=grpo", "local.max_generated_samples=128", name="plain"))
    trainer.fit()
    rows = read_metrics(trainer.output_dir / "metrics.jsonl")
    assert [(r["step"], r["samples_generated"], r["samples_generated_total"]) for r in rows] == [(1, 64, 64), (2, 64, 128)]
    # dynamic sampling (the untrained model gets most groups all wrong: refill rounds, up to 4 per step)
    cfg = small_config(*common, "algorithm.loss=dapo", "algorithm.dynamic_filtering=true",
                       "local.max_generated_samples=400", name="ds")
    trainer = Trainer(cfg)
    trainer.fit()
    rows = read_metrics(trainer.output_dir / "metrics.jsonl")
    totals = [r["samples_generated_total"] for r in rows]
    assert totals[-1] >= 400 > (totals[-2] if len(totals) > 1 else 0) and len(rows) < 100
    assert any(r["samples_generated"] > 64 for r in rows)  # a step with refill rounds
    for r in rows:
        assert r["samples_generated"] == r["rollout/num_groups"] * 8 == r["reward/graded"]  # held-out not counted
        assert r["samples_generated"] % 64 == 0 and 64 <= r["samples_generated"] <= 4 * 64
    assert totals == list(itertools.accumulate(r["samples_generated"] for r in rows))
    last = rows[-1]["step"]
    assert json.loads((trainer.output_dir / "heldout.json").read_text())["step"] == last
    assert list_checkpoints(trainer.output_dir)[-1][0] == last
    run = {"out": trainer.output_dir, "max_steps": 100, "budget": 400}
    assert compare._finished(run) and not compare._finished({**run, "budget": totals[-1] + 1})
    # a rerun is complete: nothing trained, nothing appended
    again = Trainer(cfg)
    again.fit()
    assert "already complete" in capsys.readouterr().err
    assert read_metrics(trainer.output_dir / "metrics.jsonl") == rows
    # a checkpoint written before the counter existed: the count is recovered from metrics.jsonl
    ckpt = list_checkpoints(trainer.output_dir)[-1][1]
    state = torch.load(ckpt, weights_only=False)
    del state["samples_generated_total"]
    torch.save(state, ckpt)
    old = Trainer(cfg)
    old.maybe_resume()
    assert old.samples_generated_total == totals[-1] and old.finished()


def test_sample_budget_is_refused_where_it_cannot_be_honoured(default_config):
    with pytest.raises(ConfigError, match="local.max_generated_samples.*local backend only"):
        load_config(default_config, ["backend=openrlhf", "local.max_generated_samples=1000"])
    with pytest.raises(ConfigError, match="local.max_generated_samples.*lr_schedule"):
        load_config(default_config, ["train.lr_schedule=cosine", "local.max_generated_samples=1000"])
    with pytest.raises(ConfigError, match="max_generated_samples"):
        load_config(default_config, ["local.max_generated_samples=0"])


def test_a_budget_stopped_run_is_the_prefix_of_the_longer_run(small_config, capsys):
    """What benchmarks/testbed_at_step.py rests on: a dynamic-sampling run stopped by
    local.max_generated_samples at step 2 trains exactly the first 2 steps of the same run trained to step 4,
    and its end-of-run held-out evaluation equals the longer run's evaluation at step 2 (held-out sampling
    is seeded by run seed and step only). The script then reads it and pairs it by seed."""
    import subprocess
    import sys

    from apmpo_openrlhf.local.metrics import read_metrics
    from apmpo_openrlhf.local.trainer import Trainer

    common = ["checkpoint.save_hf=false", "checkpoint.save_steps=100", "local.task.heldout_fraction=0.2",
              "local.heldout_eval.at_end=true", "local.heldout_eval.every_steps=2", "local.heldout_eval.n_samples=2",
              "algorithm.loss=dapo", "algorithm.dynamic_filtering=true", "max_steps=4"]
    long = Trainer(small_config(*common, name="long/seed_0"))
    long.fit()
    long_rows = read_metrics(long.output_dir / "metrics.jsonl")
    budget = long_rows[1]["samples_generated_total"]
    short = Trainer(small_config(*common, f"local.max_generated_samples={budget}", name="short/seed_0"))
    short.fit()
    short_rows = read_metrics(short.output_dir / "metrics.jsonl")
    timing = ("step_time_s", "elapsed_s")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert len(short_rows) == 2 and strip(short_rows) == strip(long_rows[:2])
    final = json.loads((short.output_dir / "heldout.json").read_text())
    at_2 = next(r for r in map(json.loads, (long.output_dir / "heldout.jsonl").read_text().splitlines()) if r["step"] == 2)
    assert final["step"] == 2 and final["pass_at_k"] == at_2["pass_at_k"]
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "testbed_at_step.py"
    root = long.output_dir.parent.parent
    out = subprocess.run([sys.executable, str(script), "--dir", str(root), "--pair", "long@2", "short@2",
                          "--curves", "long"], capture_output=True, text=True, timeout=120, check=True).stdout
    row = next(line for line in out.splitlines() if line.startswith("| long@2 | short@2 |"))
    assert row.split("|")[3].strip() == "1" and "+0.000 [+0.000, +0.000], 1.000" in row  # the same numbers
    assert f"| {budget:,} |" in next(line for line in out.splitlines() if line.startswith("| long @ 2 |"))
    assert "| long | 0 |" in out
