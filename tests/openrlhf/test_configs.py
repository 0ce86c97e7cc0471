"""Every OpenRLHF config resolves, passes OpenRLHF's own parser and checks, and matches SPEC.md 6;
bad configs fail with messages naming the key, the value and what is allowed."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from apmpo_openrlhf.config import ConfigError, load_config
from apmpo_openrlhf.openrlhf_adapter.arguments import algorithm_spec, openrlhf_argv
from apmpo_openrlhf.openrlhf_adapter.launcher import OpenRLHFArgumentError, validate_with_openrlhf

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
EXPERIMENT_CONFIGS = sorted(
    p for p in CONFIGS.rglob("*.yaml") if p.relative_to(CONFIGS).parts[0] not in ("defaults", "local")
)
MATH_MODELS = ["qwen2.5-math-1.5b-instruct", "qwen2.5-3b-instruct", "deepseek-r1-distill-qwen-1.5b"]
METHODS = ["grpo", "dapo", "gmpo", "apmpo"]


def _rel(p: Path) -> str:
    return str(p.relative_to(REPO))


def test_every_experiment_of_the_paper_has_a_config():
    names = {_rel(p) for p in EXPERIMENT_CONFIGS}
    for model in MATH_MODELS:
        for method in METHODS:
            assert f"configs/math/{model}/{method}.yaml" in names
    assert "configs/sql/qwen2.5-coder-3b-instruct/apmpo.yaml" in names
    assert "configs/multimodal/qwen2.5-vl-3b-instruct/apmpo.yaml" in names
    tables = {p.relative_to(CONFIGS / "ablations").parts[0] for p in CONFIGS.glob("ablations/*/*/*.yaml")}
    assert tables == {
        "table3_clip_symmetry",
        "table6_components",
        "table7_fss",
        "table8_p_schedule",
        "table9_gamma",
        "table10_eps",
    }
    # every ablation exists for the three math models
    for table_dir in (CONFIGS / "ablations").iterdir():
        assert sorted(d.name for d in table_dir.iterdir()) == sorted(MATH_MODELS)


@pytest.fixture(scope="module")
def validated():
    """Each config -> (TrainConfig, OpenRLHF's args after its own parser and checks)."""
    out = {}
    for path in EXPERIMENT_CONFIGS:
        cfg = load_config(path)
        args, messages = validate_with_openrlhf(openrlhf_argv(cfg, cwd=REPO))
        out[_rel(path)] = (cfg, args, messages)
    return out


def test_all_configs_pass_openrlhf_validation_with_paper_settings(validated):
    assert len(validated) == len(EXPERIMENT_CONFIGS) >= 12 + 2 + 3 * 12
    for name, (cfg, args, _) in validated.items():
        assert cfg.backend == "openrlhf", name
        # SPEC.md 6 training settings, as OpenRLHF will use them
        assert args.rollout.batch_size == 512 and args.rollout.n_samples_per_prompt == 8, name
        assert args.rollout.temperature == 1.0, name
        assert math.isclose(args.actor.adam.lr, 1e-6), name
        assert args.actor.lr_scheduler == "constant_with_warmup" and args.actor.lr_warmup_ratio == 0.0, name
        assert args.algo.kl.use_loss and math.isclose(args.algo.kl.init_coef, 0.001), name
        assert args.algo.kl.estimator == "k3", name
        # 4 optimizer steps per rollout batch (SPEC.md 5)
        assert args.rollout.batch_size * args.rollout.n_samples_per_prompt // args.train.batch_size == 4, name
        # one node, 4 GPUs: ZeRO-3 actors colocated with 4 vLLM engines in sleep mode
        assert args.train.colocate_all and args.ds.zero_stage == 3, name
        assert args.actor.num_nodes * args.actor.num_gpus_per_node == 4, name
        assert args.vllm.num_engines * args.vllm.tensor_parallel_size == 4, name
        assert args.vllm.enable_sleep and args.ds.enable_sleep, name
        assert args.critic.model_name_or_path is None, name  # OpenRLHF dropped the critic (no GAE)
        assert args.reward.remote_url == [str(REPO / "apmpo_openrlhf/rewards/openrlhf_reward.py")], name
        assert cfg.max_steps == 400, name
        spec = algorithm_spec(cfg)
        assert spec.group_size == 8 and spec.advantage_std == "population", name


def test_method_and_ablation_values(validated):
    for model in MATH_MODELS:
        for method in METHODS:
            cfg, args, _ = validated[f"configs/math/{model}/{method}.yaml"]
            spec = algorithm_spec(cfg)
            assert spec.loss == method
            if method == "apmpo":
                a = spec.adaptive
                assert (a["gamma"], a["eps_min"], a["eps_max"], spec.loss_kwargs["eps_low"]) == (0.8, 0.2, 0.4, 0.2)
                assert (a["p_schedule"], a["fss"], a["eps_schedule"], a["scope"]) == ("exp", "full", "tanh", "batch")
            if method == "dapo":
                assert args.algo.dynamic_filtering_enable and list(args.algo.dynamic_filtering_range) == [0, 1]
                assert list(args.actor.eps_clip_low_high) == [0.2, 0.28]
                assert args.actor.loss_agg_mode == "token-mean"
            else:
                assert not args.algo.dynamic_filtering_enable
            if method == "grpo":
                assert list(args.actor.eps_clip_low_high) == [0.2, 0.2]
    cfg, args, _ = validated["configs/math/deepseek-r1-distill-qwen-1.5b/apmpo.yaml"]
    assert args.rollout.max_new_tokens == 8192 and args.data.prompt_dataset.startswith("data/prompts/r1/")
    cfg, args, _ = validated["configs/math/qwen2.5-math-1.5b-instruct/apmpo.yaml"]
    assert args.data.max_len == 4096  # the model's context
    cfg, args, _ = validated["configs/multimodal/qwen2.5-vl-3b-instruct/apmpo.yaml"]
    assert args.data.max_images_per_prompt == 1 and args.data.image_key == "images"
    abl = "configs/ablations/{}/qwen2.5-math-1.5b-instruct/{}.yaml"
    checks = {
        ("table3_clip_symmetry", "symmetric"): lambda c: c.algorithm.clip == "symmetric",
        ("table6_components", "grpo_fac"): lambda c: (c.algorithm.adaptive.p_schedule, c.algorithm.adaptive.p_fixed)
        == ("fixed", 1.0),
        ("table6_components", "grpo_pmpo"): lambda c: (c.algorithm.adaptive.eps_schedule, c.algorithm.adaptive.eps_fixed)
        == ("fixed", 0.2),
        ("table7_fss", "fss_mu"): lambda c: c.algorithm.adaptive.fss == "mu",
        ("table7_fss", "fss_inv_sigma"): lambda c: c.algorithm.adaptive.fss == "inv_sigma",
        ("table8_p_schedule", "p_linear"): lambda c: c.algorithm.adaptive.p_schedule == "linear",
        ("table9_gamma", "gamma_0.2"): lambda c: c.algorithm.adaptive.gamma == 0.2,
        ("table10_eps", "eps_0.1_0.3"): lambda c: (c.algorithm.adaptive.eps_min, c.algorithm.adaptive.eps_max)
        == (0.1, 0.3),
    }
    for (table, variant), check in checks.items():
        cfg, _, _ = validated[abl.format(table, variant)]
        assert cfg.algorithm.loss == "apmpo" and check(cfg), (table, variant)
        assert cfg.output_dir.endswith(f"{table}/qwen2.5-math-1.5b-instruct/{variant}")


def test_reward_file_path_is_relative_to_the_ray_job_working_dir():
    cfg = load_config(CONFIGS / "math/qwen2.5-3b-instruct/apmpo.yaml")
    argv = openrlhf_argv(cfg, cwd=REPO, relative_reward_path=True)
    assert argv[argv.index("--reward.remote_url") + 1] == "apmpo_openrlhf/rewards/openrlhf_reward.py"
    http = load_config(CONFIGS / "math/qwen2.5-3b-instruct/apmpo.yaml", ["openrlhf.remote_reward_url=http://127.0.0.1:5000/get_reward"])
    argv = openrlhf_argv(http, cwd=REPO)
    assert argv[argv.index("--reward.remote_url") + 1] == "http://127.0.0.1:5000/get_reward"


def test_dry_run_prints_config_and_exact_openrlhf_arguments():
    config = "configs/math/qwen2.5-math-1.5b-instruct/apmpo.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "apmpo_openrlhf.train", "--config", config, "--dry-run",
         "--set", "algorithm.adaptive.gamma=0.6", "--set", "openrlhf.vllm_gpu_memory_utilization=0.45"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "# resolved config" in out and "gamma: 0.6" in out
    command = next(line for line in out.splitlines() if line.startswith("python -m openrlhf.cli.train_ppo_ray "))
    expected = openrlhf_argv(load_config(REPO / config, ["openrlhf.vllm_gpu_memory_utilization=0.45"]), cwd=REPO)
    assert command.split()[3:] == expected
    assert "--vllm.gpu_memory_utilization 0.45" in command


# ── Bad configs: each kind of error names the key, the value and what is allowed ──


def _apmpo(*overrides: str):
    return load_config(CONFIGS / "math/qwen2.5-math-1.5b-instruct/apmpo.yaml", list(overrides))


@pytest.mark.parametrize(
    "override, expected",
    [
        ("openrlhf.vllm_engines=4", ["openrlhf.vllm_engines", "unknown key", "vllm_num_engines"]),
        ("openrlhf.zero_stage=three", ["openrlhf.zero_stage", "'three'", "integer"]),
        ("openrlhf.zero_stage=4", ["openrlhf.zero_stage", "4", "less than or equal to 3"]),
        ("openrlhf.vllm_gpu_memory_utilization=1.5", ["vllm_gpu_memory_utilization", "1.5", "less than or equal to 1"]),
        ("openrlhf.vllm_sync_backend=mpi", ["vllm_sync_backend", "'mpi'", "'nccl' or 'gloo'"]),
        ("algorithm.loss=ppo", ["algorithm.loss", "'ppo'", "'apmpo'"]),
        ("openrlhf.vllm_num_engines=2", ["vllm_num_engines * vllm_tensor_parallel_size", "2", "must equal"]),
    ],
)
def test_schema_errors_name_key_value_and_rule(override, expected):
    with pytest.raises(ConfigError) as err:
        _apmpo(override)
    for fragment in expected:
        assert fragment in str(err.value), (fragment, str(err.value))


def test_backend_specific_errors():
    with pytest.raises(ConfigError, match=r"model.path is required for backend openrlhf"):
        openrlhf_argv(_apmpo("model.path=null"))
    with pytest.raises(ConfigError, match=r"overlong_buffer_len = 4000 must be <= rollout.max_new_tokens = 3072"):
        openrlhf_argv(_apmpo("algorithm.overlong_buffer_len=4000"))
    with pytest.raises(ConfigError, match=r"eval.at_step0 / eval.every_steps need data.eval_path"):
        openrlhf_argv(_apmpo("data.eval_path=null", "eval.at_step0=true"))


def test_float32_only_with_the_cpu_backend(monkeypatch):
    """OpenRLHF's parser knows bf16/fp16; float32 is the CPU backend's (no flag: it sets the dtype
    after OpenRLHF's checks). Where CUDA is present the config is refused, naming the key."""
    from apmpo_openrlhf.openrlhf_adapter import cpu_backend

    monkeypatch.setattr(cpu_backend, "active", lambda: True)  # as on a machine without GPU
    argv = openrlhf_argv(_apmpo("model.dtype=float32"))
    assert "--ds.param_dtype" not in argv
    args, _ = validate_with_openrlhf(argv)
    assert cpu_backend.configure_args(args, _apmpo("model.dtype=float32")) and args.ds.param_dtype == "fp32"
    assert cpu_backend.engine_dtype(args) == "float32"
    monkeypatch.setattr(cpu_backend, "active", lambda: False)  # as on a GPU node
    with pytest.raises(ConfigError, match=r"model.dtype = 'float32'.*allowed: bfloat16, float16"):
        openrlhf_argv(_apmpo("model.dtype=float32"))
    assert openrlhf_argv(_apmpo())[openrlhf_argv(_apmpo()).index("--ds.param_dtype") + 1] == "bf16"


def test_openrlhf_parser_and_checks_reject_with_their_own_message():
    # argparse (OpenRLHF's parser): an unknown flag and a bad choice
    with pytest.raises(OpenRLHFArgumentError, match=r"unrecognized arguments: --actor.no_such_flag"):
        validate_with_openrlhf(openrlhf_argv(_apmpo("openrlhf.extra_args=[--actor.no_such_flag, '1']")))
    with pytest.raises(OpenRLHFArgumentError, match=r"--ds.experts_implementation: invalid choice: 'bogus'"):
        validate_with_openrlhf(openrlhf_argv(_apmpo("openrlhf.extra_args=[--ds.experts_implementation, bogus]")))
    # OpenRLHF's own assertion after parsing (fewer rollout micro-batches than actor ranks)
    with pytest.raises(OpenRLHFArgumentError, match=r"number of sample batches must be greater than or equal"):
        validate_with_openrlhf(
            openrlhf_argv(
                _apmpo(
                    "rollout.prompts_per_step=1",
                    "rollout.n_samples_per_prompt=2",
                    "train.train_batch_size=2",
                    "train.micro_batch_size=1",
                    "openrlhf.rollout_micro_batch_size=2",
                )
            )
        )


def test_dry_run_exits_2_with_message_on_bad_config():
    proc = subprocess.run(
        [sys.executable, "-m", "apmpo_openrlhf.train", "--config", "configs/math/qwen2.5-3b-instruct/grpo.yaml",
         "--dry-run", "--set", "train.lr=-1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "train.lr = -1" in proc.stderr and "greater than 0" in proc.stderr


def test_relative_paths_resolve_against_the_submitting_checkout(tmp_path):
    from apmpo_openrlhf.openrlhf_adapter.arguments import output_paths, with_path_base

    cfg = with_path_base(_apmpo("openrlhf.final_model_dir=/abs/final"), base=str(tmp_path))
    assert cfg.model.path == str(tmp_path / "models/Qwen2.5-Math-1.5B-Instruct")
    assert cfg.data.train_path == str(tmp_path / "data/prompts/qwen/math_train.jsonl")
    assert cfg.output_dir == str(tmp_path / "outputs/math/qwen2.5-math-1.5b-instruct/apmpo")
    paths = output_paths(cfg)
    assert paths["final_model_dir"] == "/abs/final"  # absolute paths are kept
    assert paths["ckpt_path"] == str(tmp_path / "outputs/math/qwen2.5-math-1.5b-instruct/apmpo/checkpoints")
    assert with_path_base(_apmpo(), base="").model.path == "models/Qwen2.5-Math-1.5B-Instruct"


def test_training_refuses_missing_local_inputs_before_starting_ray(tmp_path, capsys):
    from apmpo_openrlhf.openrlhf_adapter.launcher import run

    cfg = _apmpo(f"model.path={tmp_path}/no_model", f"data.train_path={tmp_path}/train.jsonl",
                 f"openrlhf.remote_reward_url={tmp_path}/reward.py")
    assert run(cfg, dry_run=False) == 2
    assert "reward function file not found" in capsys.readouterr().err
    (tmp_path / "reward.py").write_text("def reward_func(queries, prompts, labels):\n    return {}\n")
    assert run(cfg, dry_run=False) == 2
    assert f"model.path = '{tmp_path}/no_model': not found" in capsys.readouterr().err


def test_training_path_hands_openrlhf_train_the_patched_classes(tmp_path):
    """The wiring of a real run up to OpenRLHF's train(): patches installed before the CLI module
    runs are what its train() uses, and the hook receives OpenRLHF's own train function. The output
    folders are prepared as _train() prepares them before ray.init: OpenRLHF's checkpoint and
    final-model folders, and the resolved config that the evaluation harness reads."""
    import yaml

    from apmpo_openrlhf.config import validate
    from apmpo_openrlhf.openrlhf_adapter.launcher import prepare_output_dirs, run_openrlhf_cli
    from apmpo_openrlhf.openrlhf_adapter.patches import check_installed, install_driver_patches
    from evaluation.run_info import resolve_run_identity

    seen = {}
    cfg = _apmpo(f"output_dir={tmp_path / 'apmpo_seed2'}", "seed=2")

    def on_validated(args, real_train):
        check_installed(real_train.__globals__)  # raises if OpenRLHF would use its own classes
        seen["train_file"] = real_train.__code__.co_filename
        seen["kl"] = args.algo.kl.init_coef
        seen["saved"] = prepare_output_dirs(cfg, args)
        seen["final_model_dir"] = Path(args.ckpt.output_dir)

    restore = install_driver_patches()
    try:
        run_openrlhf_cli(openrlhf_argv(cfg, cwd=REPO), on_validated, capture=True)
    finally:
        restore()
    assert seen["train_file"].endswith("openrlhf/cli/train_ppo_ray.py") and seen["kl"] == 0.001
    out = tmp_path / "apmpo_seed2"
    assert seen["saved"] == out / "train_config.yaml"
    assert (out / "checkpoints").is_dir() and seen["final_model_dir"] == out / "final_model"
    assert validate(yaml.safe_load(seen["saved"].read_text())) == cfg  # every key, round-trips
    assert not list(out.glob(".*.tmp"))  # written through a temporary file, renamed
    # OpenRLHF writes the final model and the HF checkpoint copies below output_dir; from there the
    # harness finds the config (it looks up to three folders above a model folder).
    for model_dir in (seen["final_model_dir"], out / "checkpoints" / "global_step50_hf"):
        ident = resolve_run_identity(str(model_dir))
        assert (ident["method"], ident["train_seed"], ident["model_name"], ident["train_name"]) == (
            "apmpo", 2, "Qwen2.5-Math-1.5B-Instruct", "math-qwen2.5-math-1.5b-instruct-apmpo")
    with pytest.raises(RuntimeError, match="did not pick up APMPOPolicyModelActor"):
        run_openrlhf_cli(openrlhf_argv(_apmpo(), cwd=REPO), on_validated, capture=True)


def test_cosine_lr_schedule_maps_to_openrlhfs_cosine_with_min_lr():
    cfg = load_config(REPO / "configs" / "math" / "qwen2.5-math-1.5b-instruct" / "apmpo.yaml",
                      ["train.lr_schedule=cosine", "train.min_lr_ratio=0.05", "train.warmup_steps=16"])
    args, _ = validate_with_openrlhf(openrlhf_argv(cfg, cwd=REPO))
    assert args.actor.lr_scheduler == "cosine_with_min_lr"
    assert args.actor.min_lr_ratio == pytest.approx(0.05)
    assert math.ceil(400 * 4 * args.actor.lr_warmup_ratio) == 16  # OpenRLHF's warm-up: ceil(steps x ratio)
    # 25 of 44 optimizer steps: 44 * (25 / 44) = 25.000000000000004, which ceil() would make 26
    short = load_config(REPO / "configs" / "math" / "qwen2.5-math-1.5b-instruct" / "apmpo.yaml",
                        ["max_steps=11", "train.warmup_steps=25"])
    args, _ = validate_with_openrlhf(openrlhf_argv(short, cwd=REPO))
    assert math.ceil(11 * 4 * args.actor.lr_warmup_ratio) == 25
