"""The algorithm section: loss names from the registry, loss-specific keys refused where the chosen
loss does not read them (issue 17), the rollout correction keys and OpenRLHF's own flags for them,
the engine dtype, and the method configs of the new baselines."""

from __future__ import annotations

from pathlib import Path

import pytest

from apmpo_openrlhf.algorithms import LOSS_SPECIFIC_KEYS, POLICY_LOSSES
from apmpo_openrlhf.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "math" / "qwen2.5-math-1.5b-instruct"


def test_the_loss_choices_are_the_registry():
    for name in POLICY_LOSSES:
        assert load_config(None, [f"algorithm.loss={name}"]).algorithm.loss == name
    with pytest.raises(ConfigError) as e:
        load_config(None, ["algorithm.loss=ppo"])
    assert "algorithm.loss" in str(e.value) and all(name in str(e.value) for name in POLICY_LOSSES)


@pytest.mark.parametrize(
    "loss, override, words",
    [
        # the example of issue 17: eps_high with apmpo points at the key that sets a fixed bound
        ("apmpo", "algorithm.eps_high=0.3", ["algorithm.eps_high = 0.3", "'apmpo'",
                                             "algorithm.adaptive.eps_schedule: fixed", "eps_fixed"]),
        ("grpo", "algorithm.clip=symmetric", ["algorithm.clip = 'symmetric'", "read by apmpo"]),
        ("gspo", "algorithm.gmpo_clip=0.3", ["algorithm.gmpo_clip = 0.3", "read by gmpo"]),
        ("dapo", "algorithm.adaptive.gamma=0.5", ["algorithm.adaptive.gamma = 0.5", "read by apmpo"]),
        ("gspo", "algorithm.eps_high=0.3", ["algorithm.gspo_eps_high"]),
        ("cispo", "algorithm.eps_low=0.1", ["algorithm.cispo_eps_low"]),
        ("grpo", "algorithm.cispo_eps_high=4.0", ["read by cispo"]),
        ("apmpo", "algorithm.gspo_eps_low=0.001", ["read by gspo"]),
        ("grpo", "algorithm.drgrpo_token_budget=512", ["read by drgrpo"]),
        ("drgrpo", "algorithm.advantage_std=unbiased", ["does not divide advantages by the group std"]),
    ],
)
def test_a_key_the_loss_does_not_read_is_refused(loss, override, words):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"algorithm.loss={loss}", override])
    for word in words:
        assert word in str(e.value), str(e.value)


def test_the_same_keys_are_accepted_by_the_losses_that_read_them():
    for name, entry in POLICY_LOSSES.items():
        assert set(entry.reads) <= set(LOSS_SPECIFIC_KEYS)
    load_config(None, ["algorithm.loss=grpo", "algorithm.eps_high=0.3"])
    load_config(None, ["algorithm.loss=apmpo", "algorithm.clip=symmetric", "algorithm.adaptive.gamma=0.5"])
    load_config(None, ["algorithm.loss=cispo", "algorithm.cispo_eps_high=4.0", "algorithm.cispo_eps_low=0.5"])
    # keys at their defaults are fine with any loss (the paper configs set shared defaults via extends:)
    for name in POLICY_LOSSES:
        load_config(None, [f"algorithm.loss={name}", "algorithm.eps_low=0.2", "algorithm.adaptive.gamma=0.8"])


@pytest.mark.parametrize("method", ["gspo", "drgrpo", "cispo"])
def test_method_configs_of_the_new_baselines(method):
    """Paper settings (extends: the shared defaults) with each baseline's own hyper-parameters."""
    from apmpo_openrlhf.openrlhf_adapter.arguments import algorithm_spec, openrlhf_argv

    cfg = load_config(PAPER / f"{method}.yaml")
    spec = algorithm_spec(cfg)
    assert spec.loss == method and cfg.algorithm.kl_beta == 0.001
    want = {"gspo": {"eps_low": 3e-4, "eps_high": 4e-4},
            "drgrpo": {"eps_low": 0.2, "eps_high": 0.2, "token_budget": 3072},
            "cispo": {"eps_high": 0.28, "eps_low": None}}[method]
    assert spec.loss_kwargs == want
    argv = openrlhf_argv(cfg, cwd=REPO)
    assert argv[argv.index("--actor.loss_agg_mode") + 1] == ("seq-mean-token-mean" if method == "gspo" else "token-mean")


def test_rollout_correction_keys():
    cfg = load_config(None, ["algorithm.rollout_correction.level=token", "algorithm.rollout_correction.mode=clip",
                             "algorithm.rollout_correction.threshold=[0.5, 2.0]"])
    assert cfg.algorithm.rollout_correction.threshold == [0.5, 2.0]
    # YAML reads a bare `off` as false
    assert load_config(None, ["algorithm.rollout_correction.level=off"]).algorithm.rollout_correction.level == "off"
    for overrides, word in [
        (["algorithm.rollout_correction.level=seq", "algorithm.rollout_correction.mode=clip"], "level='token'"),
        (["algorithm.rollout_correction.level=token", "algorithm.rollout_correction.threshold=[2, 4]"], "contain 1"),
        (["algorithm.rollout_correction.mode=clip"], "no effect while level is 'off'"),
        (["algorithm.rollout_correction.level=token", "algorithm.rollout_correction.measure=false"], "needs the rollout"),
        (["algorithm.rollout_correction.level=sequence"], "algorithm.rollout_correction.level"),
    ]:
        with pytest.raises(ConfigError) as e:
            load_config(None, overrides)
        assert word in str(e.value), (overrides, str(e.value))


def _argv(*overrides):
    from apmpo_openrlhf.openrlhf_adapter.arguments import algorithm_spec, openrlhf_argv

    cfg = load_config(PAPER / "apmpo.yaml", list(overrides))
    return openrlhf_argv(cfg, cwd=REPO), algorithm_spec(cfg)


def test_openrlhf_keeps_rollout_log_probs_and_the_correction_travels_in_the_spec():
    argv, spec = _argv()
    # measuring needs vLLM's log-probs, which OpenRLHF keeps only with a correction level set
    assert argv[argv.index("--algo.advantage.is_correction_level") + 1] == "token"
    assert spec.rollout_correction["level"] == "off" and spec.rollout_correction["measure"]
    argv, spec = _argv("algorithm.rollout_correction.measure=false")
    assert "--algo.advantage.is_correction_level" not in argv
    argv, spec = _argv("algorithm.rollout_correction.level=seq", "algorithm.rollout_correction.threshold=[0.8, 1.25]")
    assert argv[argv.index("--algo.advantage.is_correction_level") + 1] == "seq"
    assert argv[argv.index("--algo.advantage.is_correction_threshold") + 1: argv.index("--algo.advantage.is_correction_threshold") + 3] == ["0.8", "1.25"]
    assert spec.rollout_correction["level"] == "seq"


def test_openrlhfs_own_correction_flags_in_extra_args_work():
    flags = ('openrlhf.extra_args=["--algo.advantage.is_correction_level", "token", '
             '"--algo.advantage.is_correction_mode", "clip", "--algo.advantage.is_correction_threshold", "0.5", "2", '
             '"--actor.aux_loss_coef", "0"]')
    argv, spec = _argv(flags)
    assert spec.rollout_correction == {"level": "token", "mode": "clip", "gating": "ratio", "threshold": [0.5, 2.0],
                                       "measure": True}
    assert argv.count("--algo.advantage.is_correction_level") == 1  # folded in, given once
    assert argv[-2:] == ["--actor.aux_loss_coef", "0"]  # other flags pass through
    bad = 'openrlhf.extra_args=["--algo.advantage.is_correction_level", "seq", "--algo.advantage.is_correction_mode", "clip"]'
    with pytest.raises(ConfigError) as e:
        _argv(bad)
    assert "--algo.advantage.is_correction_mode" in str(e.value) and "level='token'" in str(e.value)


def test_engine_dtype_is_refused_on_gpus(monkeypatch):
    from apmpo_openrlhf.openrlhf_adapter import cpu_backend

    monkeypatch.setattr(cpu_backend, "active", lambda: False)  # the decision a GPU machine takes
    with pytest.raises(ConfigError) as e:
        _argv("openrlhf.vllm_dtype=float32")
    assert "openrlhf.vllm_dtype" in str(e.value) and "bfloat16" in str(e.value)
    _argv("openrlhf.vllm_dtype=bfloat16")  # what OpenRLHF does anyway


def test_compare_runs_the_new_baselines(tmp_path, capsys):
    """`compare --methods gspo,drgrpo,cispo` (or --baselines) plans and validates a run per method and
    seed on either preset; an unknown name is a usage error."""
    from apmpo_openrlhf import compare

    for preset in ("toy", "testbed"):
        cc = compare.load_compare_config(compare.PRESETS[preset])
        assert set(cc.baselines) == {"gspo", "drgrpo", "cispo"}
        runs = compare.plan_runs(cc, compare.PRESETS[preset], ["gspo", "drgrpo", "cispo"], [0], [])
        assert [r["method"] for r in runs] == ["gspo", "drgrpo", "cispo"]
        assert all(f"algorithm.loss={r['method']}" in r["sets"] for r in runs)
    out = str(tmp_path / "cmp")
    # accepted (then nothing to plot: exit 1), comma- or space-separated, or all of them with --baselines
    assert compare.main(["--preset", "testbed", "--methods", "gspo,drgrpo", "cispo", "--seeds", "0",
                         "--plots-only", "--output-dir", out]) == 1
    assert compare.main(["--baselines", "--seeds", "0", "--plots-only", "--output-dir", out]) == 1
    assert compare.main(["--methods", "gspo,nope", "--plots-only", "--output-dir", out]) == 2
    assert "nope" in capsys.readouterr().err
