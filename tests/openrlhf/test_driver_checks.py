"""Nothing silent in the driver (issue 17): every OpenRLHF flag is passed on, set from a config key or
refused; W&B without credentials fails before anything starts; the device is decided by the cluster
that runs the job, not by the driver; the per-GPU memory estimate of --dry-run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from apmpo_openrlhf.config import ConfigError, load_config
from apmpo_openrlhf.openrlhf_adapter import arguments, cpu_backend, launcher
from apmpo_openrlhf.openrlhf_adapter.arguments import openrlhf_argv
from apmpo_openrlhf.openrlhf_adapter.launcher import validate_with_openrlhf

REPO = Path(__file__).resolve().parents[2]
APMPO = REPO / "configs" / "math" / "qwen2.5-math-1.5b-instruct" / "apmpo.yaml"
CPU_CONFIG = REPO / "configs" / "local" / "openrlhf_cpu.yaml"


def _cfg(*overrides: str, path: Path = APMPO):
    return load_config(path, list(overrides))


def _parser_flags() -> set[str]:
    """Every flag of OpenRLHF 0.11.2's train_ppo_ray parser, read from its source (it cannot be imported)."""
    import importlib.util

    src = Path(importlib.util.find_spec("openrlhf.cli.train_ppo_ray").origin).read_text()
    flags = set()
    for match in re.finditer(r'add_argument\(\s*(f?)"(--[^"]+)"', src):
        flag = match.group(2)
        flags |= {flag.replace("{prefix}", p) for p in ("actor", "critic")} if match.group(1) else {flag}
    assert len(flags) > 150  # the parser was read
    return flags


# ── OpenRLHF flags in openrlhf.extra_args ──────────────────────────────────────────────────────


def test_every_openrlhf_flag_is_passed_on_set_from_a_key_or_refused():
    flags = _parser_flags()
    critic = {f for f in flags if f.startswith("--critic.")}
    tables = [set(arguments.CONFIG_FLAGS), set(arguments.REPLACED_FLAGS) | critic, set(arguments.PASSED_FLAGS)]
    for table in tables:
        assert table <= flags, f"not OpenRLHF flags: {sorted(table - flags)}"
    unclassified = flags - set().union(*tables)
    assert not unclassified, f"OpenRLHF flags without a decision: {sorted(unclassified)}"
    for a in range(3):
        for b in range(a + 1, 3):
            assert not tables[a] & tables[b], sorted(tables[a] & tables[b])


@pytest.mark.parametrize(
    "flag, values, names",
    [
        ("--actor.dual_clip", ["3"], "no dual clip"),
        ("--actor.policy_loss_type", ["gspo"], "algorithm.loss"),
        ("--algo.advantage.estimator", ["reinforce"], "algorithm.advantage_std"),
        ("--algo.advantage.no_std_norm", [], "algorithm.loss=drgrpo"),
        ("--reward.clip_range", ["-1", "1"], "does not clip rewards"),
        ("--algo.kl.target", ["0.1"], "algorithm.kl_beta"),
        ("--algo.kl.unbiased_gradient", [], "kl_penalty"),
        ("--train.async_enable", [], "synchronous trainer"),
        ("--critic.model_name_or_path", ["/m"], "no critic"),
        ("--critic.value_clip", ["0.3"], "no critic"),
        ("--actor.adam.lr", ["1e-5"], "use train.lr"),
        ("--ds.param_dtype", ["fp16"], "use model.dtype"),
        ("--rollout.n_samples_per_prompt", ["4"], "use rollout.n_samples_per_prompt"),
    ],
)
def test_replaced_or_config_flags_in_extra_args_are_refused(flag, values, names):
    extra = json.dumps([flag, *values])
    with pytest.raises(ConfigError, match=re.escape(flag) + r".*" + re.escape(names)):
        openrlhf_argv(_cfg(f"openrlhf.extra_args={extra}"))


def test_honoured_flags_still_reach_openrlhf():
    args, _ = validate_with_openrlhf(openrlhf_argv(_cfg('openrlhf.extra_args=["--actor.adam.eps", "1e-6"]'), cwd=REPO))
    assert args.actor.adam.eps == 1e-6


def test_the_issues_command_now_fails_before_anything_starts():
    # issue 17: this exited 0 and showed the flag in the command line, though no loss applies a dual clip
    proc = subprocess.run(
        [sys.executable, "-m", "apmpo_openrlhf.train", "--config", str(APMPO.relative_to(REPO)), "--dry-run",
         "--set", 'openrlhf.extra_args=["--actor.dual_clip", "3"]'],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "--actor.dual_clip: replaced by the APMPO extension" in proc.stderr


# ── W&B ───────────────────────────────────────────────────────────────────────────────────────


@pytest.fixture
def no_wandb_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("NETRC", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    return tmp_path


def test_online_wandb_without_a_key_is_refused_before_anything_starts(no_wandb_credentials, monkeypatch):
    from apmpo_openrlhf import wandb_setup

    online = _cfg("logging.wandb.project=p", "logging.wandb.mode=online")
    with pytest.raises(ConfigError, match=r"logging.wandb.mode = 'online' needs a W&B API key.*every Ray node"):
        wandb_setup.check_credentials(online)
    wandb_setup.check_credentials(_cfg("logging.wandb.project=p", "logging.wandb.mode=offline"))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    wandb_setup.check_credentials(online)


def test_a_wandb_login_entry_in_netrc_counts_as_credentials(no_wandb_credentials, monkeypatch):
    from apmpo_openrlhf import wandb_setup

    online = _cfg("logging.wandb.project=p", "logging.wandb.mode=online")
    netrc = no_wandb_credentials / ".netrc"
    netrc.write_text("machine example.org\n  login user\n  password secret\n")
    netrc.chmod(0o600)
    with pytest.raises(ConfigError, match="needs a W&B API key"):
        wandb_setup.check_credentials(online)  # an entry for another host is not a W&B key
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    wandb_setup.check_credentials(online)  # what `wandb login` writes


def test_online_wandb_without_a_key_exits_2_on_both_backends(no_wandb_credentials):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for config in ("configs/local/default.yaml", "configs/local/openrlhf_cpu.yaml"):
        proc = subprocess.run(
            [sys.executable, "-m", "apmpo_openrlhf.train", "--config", config, "--set", "logging.wandb.mode=online",
             "--set", f"output_dir={no_wandb_credentials / 'out'}"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 2 and "needs a W&B API key" in proc.stderr, (config, proc.stderr[-2000:])
        assert not (no_wandb_credentials / "out" / "base_model").exists()  # nothing was built


def test_openrlhf_workers_write_wandb_under_the_output_dir_and_resume_its_run(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tmp_path / "run"
    cfg = _cfg(f"output_dir={out}", "logging.wandb.mode=offline", path=CPU_CONFIG)
    env = launcher.worker_env(cfg, job=False)
    assert env["WANDB_MODE"] == "offline" and env["WANDB_DIR"] == str(out.resolve())
    assert env["WANDB_RUN_ID"] == (out / "wandb_run_id").read_text().strip() == launcher.worker_env(cfg, False)[
        "WANDB_RUN_ID"]  # the same W&B run when the job is resubmitted
    assert env["WANDB_RESUME"] == "allow"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert launcher.worker_env(cfg, job=False)["WANDB_MODE"] == "disabled"
    assert "--logger.wandb.key" not in openrlhf_argv(_cfg("logging.wandb.mode=offline"))


# ── the device: decided by the cluster ────────────────────────────────────────────────────────


def test_device_outside_a_cluster_is_this_machines(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.delenv(cpu_backend.DEVICE_ENV, raising=False)
    assert launcher.resolve_device(_cfg(path=CPU_CONFIG)) == "cpu"  # this machine has no CUDA
    assert os.environ[cpu_backend.DEVICE_ENV] == "cpu" and cpu_backend.active()
    with pytest.raises(ConfigError, match=r"openrlhf.device = 'cuda', but this machine has no CUDA"):
        launcher.resolve_device(_cfg("openrlhf.device=cuda", path=CPU_CONFIG))


@pytest.mark.slow
def test_device_of_a_cluster_is_probed_on_a_gpu_slot(monkeypatch):
    """A Ray cluster with logical GPU slots on CPU workers (the CPU backend's): the probe lands on a
    GPU slot and sees no CUDA there; without GPU slots OpenRLHF could place nothing."""
    import ray

    ray.init(num_cpus=1, num_gpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        assert launcher.cluster_device() == "cpu"
    finally:
        ray.shutdown()
    ray.init(num_cpus=1, num_gpus=0, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        with pytest.raises(ConfigError, match="no GPU slots"):
            launcher.cluster_device()
    finally:
        ray.shutdown()


DRIVER_WITHOUT_CUDA = r"""
import json, os, sys
import torch
sys.path.insert(0, sys.argv[1])
from apmpo_openrlhf.config import load_config
from apmpo_openrlhf.openrlhf_adapter import cpu_backend, launcher
from apmpo_openrlhf.openrlhf_adapter.arguments import openrlhf_argv

os.environ["RAY_ADDRESS"] = "127.0.0.1:1"  # a cluster to join: an explicit cuda is taken as given
cfg = load_config(sys.argv[2], ["openrlhf.device=cuda"])
assert launcher.resolve_device(cfg) == "cuda"
original_current_device = torch.cuda.current_device
import openrlhf.trainer.ray.vllm_engine as vllm_engine
from openrlhf.utils.deepspeed.deepspeed import DeepspeedStrategy
engine_class = vllm_engine.RolloutRayActor
argv = openrlhf_argv(cfg)
env = launcher.worker_env(cfg, job=True)
print(json.dumps({
    "active": cpu_backend.active(),
    "shims": cpu_backend.install_worker_shims(),
    "current_device_untouched": torch.cuda.current_device is original_current_device,
    "strategy_untouched": not getattr(DeepspeedStrategy, "_apmpo_cpu", False),
    "engine_class_untouched": vllm_engine.RolloutRayActor is engine_class,
    "worker_device": env[cpu_backend.DEVICE_ENV],
    "loopback_env": sorted(k for k in ("VLLM_HOST_IP", "GLOO_SOCKET_IFNAME", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
                                      cpu_backend.RENDEZVOUS_DIR_ENV) if k in env),
    "runtime_env": launcher.ray_init_kwargs(cfg, None),
    "colocated_flags": [f for f in ("--train.colocate_all", "--vllm.enable_sleep", "--ds.enable_sleep") if f in argv],
}))
"""


@pytest.mark.slow
def test_a_driver_without_cuda_submitting_to_gpu_nodes_activates_nothing_of_the_cpu_backend(tmp_path):
    """issue 17: a job submitted from a CPU-only head or login node to a GPU cluster was refused ("no GPU
    on this machine") and would have handed every worker loopback addresses."""
    env = {k: v for k, v in os.environ.items() if k != cpu_backend.DEVICE_ENV}
    proc = subprocess.run([sys.executable, "-c", DRIVER_WITHOUT_CUDA, str(REPO), str(APMPO)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["active"] is False and seen["shims"] is False
    assert seen["current_device_untouched"] and seen["strategy_untouched"] and seen["engine_class_untouched"]
    assert seen["worker_device"] == "cuda" and seen["loopback_env"] == []
    assert seen["runtime_env"] == {"runtime_env": {"env_vars": seen["runtime_env"]["runtime_env"]["env_vars"]}}
    assert "worker_process_setup_hook" not in seen["runtime_env"]["runtime_env"]
    assert seen["colocated_flags"] == ["--train.colocate_all", "--vllm.enable_sleep", "--ds.enable_sleep"]


def test_float32_is_refused_for_gpu_jobs_whatever_the_driver(monkeypatch):
    monkeypatch.setattr(cpu_backend, "active", lambda: True)  # a driver without CUDA ...
    with pytest.raises(ConfigError, match=r"model.dtype = 'float32'"):
        openrlhf_argv(_cfg("openrlhf.device=cuda", "model.dtype=float32"))  # ... sending the job to GPUs
    assert "--ds.param_dtype" not in openrlhf_argv(_cfg("openrlhf.device=cpu", "model.dtype=float32"))


def test_a_cpu_backend_worker_on_a_cuda_machine_refuses(monkeypatch):
    import torch

    monkeypatch.setenv(cpu_backend.DEVICE_ENV, "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(RuntimeError, match="APMPO_DEVICE=cpu in a process with CUDA"):
        cpu_backend.install_worker_shims()


# ── GPU memory ────────────────────────────────────────────────────────────────────────────────


def test_memory_estimate_by_hand():
    from apmpo_openrlhf.openrlhf_adapter.memory_estimate import GB, KNOWN_MODELS, estimate_phases

    cfg = _cfg()
    shape = KNOWN_MODELS["Qwen2.5-Math-1.5B-Instruct"]
    phases = {p.name: p for p in estimate_phases(cfg, shape)}
    L = cfg.rollout.max_prompt_len + cfg.rollout.max_new_tokens
    P, V = shape.params, shape.vocab_size
    training = phases["training"].parts
    assert training["actor parameters"] == pytest.approx(P * 2 / 4)  # bf16, ZeRO-3 over 4 GPUs
    assert training["actor optimizer"] == pytest.approx(P * 12 / 4)
    assert training["train micro-batch logits"] == pytest.approx(cfg.train.micro_batch_size * L * V * (2 + 4 + 4))
    assert phases["generation"].parts["vLLM (colocated, awake)"] == pytest.approx(0.5 * 40 * GB)
    rollout = phases["old/reference log-probs"].parts["rollout micro-batch logits"]
    assert rollout == pytest.approx(cfg.openrlhf.rollout_micro_batch_size * L * V * (2 + 4))
    # issue 17's example: a rollout micro-batch of 8 x 4,096 tokens x 151,936 is ~20 GB of float32 logits alone
    big = {p.name: p for p in estimate_phases(_cfg("openrlhf.rollout_micro_batch_size=8"), shape)}
    assert big["old/reference log-probs"].parts["rollout micro-batch logits"] / 6 * 4 == pytest.approx(
        8 * 4096 * 151936 * 4)


@pytest.mark.parametrize("config", sorted(p for p in (REPO / "configs").rglob("*.yaml")
                                         if p.relative_to(REPO / "configs").parts[0] not in ("defaults", "local")),
                         ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_paper_config_fits_its_gpus(config):
    from apmpo_openrlhf.openrlhf_adapter.memory_estimate import GB, estimate_phases, model_shape

    cfg = load_config(config)
    peak = max(p.total for p in estimate_phases(cfg, model_shape(cfg.model.path)))
    assert peak < 0.85 * cfg.openrlhf.gpu_memory_gb * GB, f"{peak / GB:.1f} GB"


def test_memory_estimate_warns_in_the_dry_run_and_counts_a_real_model(tiny_model_dir, capsys):
    from apmpo_openrlhf.openrlhf_adapter.memory_estimate import format_estimate, model_shape

    shape = model_shape(str(tiny_model_dir))
    from transformers import AutoModelForCausalLM

    assert shape.params == sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())
    text, over = format_estimate(_cfg("openrlhf.rollout_micro_batch_size=8", "train.micro_batch_size=8"))
    assert over and "WARNING: the" in text and "exceeds openrlhf.gpu_memory_gb = 40" in text
    text, over = format_estimate(_cfg())
    assert not over and "GPU memory per actor GPU" in text


def test_paper_configs_keep_the_hf_copies_that_checkpoint_evaluation_reads():
    for path in sorted((REPO / "configs").glob("math/*/*.yaml")):
        assert "--ckpt.save_hf" in openrlhf_argv(load_config(path)), path
