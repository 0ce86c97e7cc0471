"""The testbed of `python -m apmpo_openrlhf.compare --preset testbed` (issue #11): task family and
split, exact reward, warm start, held-out Pass@k, the statistics, and the preset at reduced size
(pipeline and files, not the scientific result)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from apmpo_openrlhf import compare
from apmpo_openrlhf.config import load_config
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
    argv = ["--preset", "testbed", "--ablations", "--methods", "grpo", "dapo", "grpo_pmpo", "--seeds", "0", "1",
            "--workers", "2", "--output-dir", str(out)]
    for s in [*TINY, "max_steps=4", "local.heldout_eval.every_steps=2", "checkpoint.save_steps=2"]:
        argv += ["--set", s]
    assert compare.main(argv) == 0
    for name in ("figure1.png", "adaptive.png", "heldout.png", "summary.md", "results.json"):
        assert (out / name).stat().st_size > 0, name
    held = json.loads((out / "dapo" / "seed_1" / "heldout.json").read_text())
    assert held["step"] == 4 and held["n_samples"] == 4 and set(held["pass_at_k"]) == {"1", "2", "3", "4"}
    rows = [json.loads(x) for x in (out / "grpo" / "seed_0" / "heldout.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 2, 4]
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"grpo", "dapo", "grpo_pmpo"}
    assert results["methods"]["grpo"]["seeds"] == [0, 1]
    assert len(results["pairs"]) == 3 and results["pairs"][0]["heldout_pass@1"]["n"] == 2
    text = (out / "summary.md").read_text()
    assert "| grpo | 2 |" in text and "held-out Pass@1" in text and "- grpo vs dapo:" in text
    assert "sign-flip" in text
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
