"""The CPU backend's pieces, each on its own (the whole loop: test_cpu_loop.py).

The shims change process-wide state (torch.cuda, OpenRLHF's classes), so the tests that install
them run in a fresh interpreter, as a Ray worker would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from apmpo_openrlhf.config import ConfigError, load_config
from apmpo_openrlhf.openrlhf_adapter import cpu_backend
from apmpo_openrlhf.openrlhf_adapter.arguments import openrlhf_argv
from apmpo_openrlhf.openrlhf_adapter.launcher import ray_init_kwargs, validate_with_openrlhf, worker_env
from apmpo_openrlhf.openrlhf_adapter.loop_checks import RewardOutcomes
from apmpo_openrlhf.openrlhf_adapter.synthetic_inputs import with_synthetic_inputs

REPO = Path(__file__).resolve().parents[2]
CPU_CONFIG = REPO / "configs" / "local" / "openrlhf_cpu.yaml"
COLOCATED_CONFIG = REPO / "configs" / "local" / "openrlhf_cpu_colocated.yaml"
GPU_CONFIG = REPO / "configs" / "math" / "qwen2.5-math-1.5b-instruct" / "apmpo.yaml"

# What the shims replace, as "module:attribute" (or "module:Class.attribute").
PATCHED = [
    "torch.cuda:current_device", "torch.cuda:set_device", "torch.cuda:synchronize", "torch.cuda:current_stream",
    "openrlhf.utils.deepspeed.deepspeed:init_device_mesh",
    "openrlhf.utils.deepspeed.deepspeed:DeepspeedStrategy.setup_distributed",
    "openrlhf.utils.deepspeed.deepspeed:DeepspeedStrategy.get_ds_train_config",
    "openrlhf.trainer.ppo_utils.replay_buffer:NaiveReplayBuffer.__init__",
    "openrlhf.utils.distributed_util:stateless_init_process_group",
    "openrlhf.trainer.ray.ppo_actor:stateless_init_process_group",
    "openrlhf.trainer.ray.vllm_worker_wrap:WorkerWrap.update_weight",
    "openrlhf.utils.utils:convert_to_torch_dtype",
    # shim 10, sleep mode (sleep_contract.py)
    "deepspeed.runtime.engine:DeepSpeedEngine.forward", "deepspeed.runtime.engine:DeepSpeedEngine.backward",
    "deepspeed.runtime.engine:DeepSpeedEngine.step",
    "deepspeed.runtime.zero.stage3:DeepSpeedZeroOptimizer_Stage3.offload_states",
]

_SNAPSHOT = """
import importlib
def snapshot():
    out = {}
    for spec in PATCHED:
        module, attr = spec.split(":")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        out[spec] = obj
    return out
"""


def _python(code: str) -> str:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    return proc.stdout


@pytest.mark.slow
def test_nothing_changes_where_cuda_is_available():
    """On a GPU node the path is exactly OpenRLHF's: installing changes none of the patched objects."""
    out = _python(f"""
import torch
PATCHED = {PATCHED!r}
{_SNAPSHOT}
from apmpo_openrlhf.openrlhf_adapter import cpu_backend  # registers the flash_attn stand-in (absent here)
before = snapshot()  # imports OpenRLHF (bitsandbytes checks for CUDA at import: before the switch below)
torch.cuda.is_available = lambda: True  # as on a GPU node
assert not cpu_backend.active()
assert cpu_backend.install_worker_shims() is False
after = snapshot()
changed = [k for k in PATCHED if after[k] is not before[k]]
assert not changed, changed
print("unchanged", len(after))
""")
    assert f"unchanged {len(PATCHED)}" in out


@pytest.mark.slow
def test_shims_on_a_machine_without_cuda():
    out = _python(f"""
import torch
PATCHED = {PATCHED!r}
{_SNAPSHOT}
from apmpo_openrlhf.openrlhf_adapter import cpu_backend
before = snapshot()
assert cpu_backend.active() and cpu_backend.install_worker_shims() is True
after = snapshot()
assert [k for k in PATCHED if after[k] is before[k]] == []  # every one replaced
assert cpu_backend.install_worker_shims() is True and snapshot() == after  # idempotent

from openrlhf.trainer.ppo_utils.replay_buffer import NaiveReplayBuffer
from openrlhf.utils.utils import convert_to_torch_dtype
assert torch.cuda.current_device() == "cpu" and torch.tensor([1]).to(torch.cuda.current_device()).device.type == "cpu"
assert NaiveReplayBuffer(2).target_device == torch.device("cpu")
assert convert_to_torch_dtype("fp32") is torch.float32 and convert_to_torch_dtype("bf16") is torch.bfloat16
print("shims ok")
""")
    assert "shims ok" in out


def test_weight_sync_group_broadcasts_over_loopback(tmp_path, monkeypatch):
    """The gloo group that stands in for the NCCL communicator (actor rank 0 + 2 engine workers)."""
    monkeypatch.setenv(cpu_backend.RENDEZVOUS_DIR_ENV, str(tmp_path))
    sent = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))

    def rank(r: int) -> torch.Tensor:
        group = cpu_backend.stateless_gloo_group("127.0.0.1", 12345, r, 3, device="cpu")
        tensor = sent.clone() if r == 0 else torch.empty(3, 5)
        group.broadcast(tensor, src=0, stream=None)
        return tensor

    stale = tmp_path / "weight_sync_127.0.0.1_12345"  # left by a run that died mid-rendezvous
    stale.write_text("keys of a dead group")
    os.utime(stale, (0, 0))
    with ThreadPoolExecutor(3) as pool:  # one thread per rank: they rendezvous with each other
        received = list(pool.map(rank, range(3), timeout=120))
    for tensor in received:
        assert torch.equal(tensor, sent)


def test_cuda_only_settings_are_refused_naming_each_key():
    with pytest.raises(ConfigError) as err:
        cpu_backend.check_config(load_config(GPU_CONFIG))  # the paper's layout as it is
    message = str(err.value)
    for key in ("openrlhf.vllm_sync_backend", "model.attn_implementation"):
        assert key in message
    assert "CUDA IPC" in message  # colocate_all + nccl: the weights would go by CUDA IPC handles
    # colocate_all and both sleep modes work on the CPU (sleep_contract.py): not refused
    for key in ("openrlhf.colocate_all", "openrlhf.vllm_enable_sleep", "openrlhf.ds_enable_sleep"):
        assert key not in message
    assert "configs/local/openrlhf_cpu.yaml" in message and "openrlhf_cpu_colocated.yaml" in message
    with pytest.raises(ConfigError, match="openrlhf.packing_samples = true needs flash attention"):
        cpu_backend.check_config(load_config(CPU_CONFIG, ["openrlhf.packing_samples=true"]))
    # OpenRLHF's Ray-collective weight sync (NCCL) would reach the CPU worker's update_weight and fail
    # at the first broadcast, after the engines started: refused before
    with pytest.raises(ConfigError, match=r"--vllm.sync_with_ray .*gloo group: remove the flag"):
        cpu_backend.check_config(load_config(CPU_CONFIG, ['openrlhf.extra_args=["--vllm.sync_with_ray"]']))
    cpu_backend.check_config(load_config(CPU_CONFIG))  # the CPU layouts pass
    colocated = load_config(COLOCATED_CONFIG)
    cpu_backend.check_config(colocated)
    o = colocated.openrlhf
    assert o.colocate_all and o.vllm_enable_sleep and o.ds_enable_sleep and o.zero_stage == 3


def test_colocated_config_overrides_only_what_the_cpu_forces():
    """configs/local/openrlhf_cpu_colocated.yaml is the paper's layout (openrlhf_4xa100.yaml) with
    only the keys docs/openrlhf.md lists changed."""
    layout = load_config(REPO / "configs" / "defaults" / "openrlhf_4xa100.yaml").model_dump()
    colocated = load_config(COLOCATED_CONFIG).model_dump()
    changed = {f"{section}.{key}" for section in ("model", "openrlhf")
               for key in layout[section] if layout[section][key] != colocated[section][key]}
    assert changed == {"model.dtype", "model.attn_implementation", "openrlhf.num_gpus_per_node",
                       "openrlhf.vllm_num_engines", "openrlhf.vllm_sync_backend", "openrlhf.vllm_enforce_eager",
                       "openrlhf.rollout_micro_batch_size", "openrlhf.check_weight_sync",
                       "openrlhf.extra_args"}  # --data.max_samples 25: the data's short last batch
    assert colocated["openrlhf"]["extra_args"] == ["--data.max_samples", "25"]
    assert colocated["model"]["path"] is None  # the tiny model (synthetic_inputs.py), the schema's default
    docs = (REPO / "docs" / "openrlhf.md").read_text()
    for key in sorted(changed):
        assert f"`{key}`" in docs, f"docs/openrlhf.md does not list the override {key}"


def test_placement_of_the_colocated_layout(tmp_path):
    cfg = with_synthetic_inputs(load_config(COLOCATED_CONFIG, [f"output_dir={tmp_path}"]), create=False)
    args, _ = validate_with_openrlhf(openrlhf_argv(cfg))
    # one bundle per actor rank, shared by its reference rank and its engine (OpenRLHF's colocate_all)
    assert args.train.colocate_all and cpu_backend.placement_gpus(args) == 2
    assert args.vllm.enable_sleep and args.ds.enable_sleep


def test_ray_start_on_cpu_and_unchanged_elsewhere(monkeypatch, tmp_path):
    cfg = with_synthetic_inputs(load_config(CPU_CONFIG, [f"output_dir={tmp_path}"]), create=False)
    args, _ = validate_with_openrlhf(openrlhf_argv(cfg))
    monkeypatch.setattr(cpu_backend, "active", lambda: True)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    kwargs = ray_init_kwargs(cfg, args)
    # actor + reference + one engine: logical GPU slots, every socket on 127.0.0.1
    assert kwargs["num_gpus"] == 3 and kwargs["_node_ip_address"] == "127.0.0.1"
    assert kwargs["runtime_env"]["worker_process_setup_hook"] == cpu_backend.WORKER_SETUP_HOOK
    env = kwargs["runtime_env"]["env_vars"]
    assert env["VLLM_HOST_IP"] == "127.0.0.1" and env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert env["APMPO_GRADING_TIMEOUT_S"] == "10.0" and env["APMPO_GRADER_WORKERS"] == "1"
    # joining a cluster (ray job submit): only the runtime environment
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    assert set(ray_init_kwargs(cfg, args)) == {"runtime_env"}
    # a GPU node: OpenRLHF's runtime environment only
    monkeypatch.setattr(cpu_backend, "active", lambda: False)
    kwargs = ray_init_kwargs(cfg, args)
    assert set(kwargs) == {"runtime_env"} and set(kwargs["runtime_env"]) == {"env_vars"}
    assert "VLLM_HOST_IP" not in worker_env(cfg, job=True)


def test_synthetic_inputs_for_null_model_and_data(tmp_path):
    cfg = load_config(CPU_CONFIG, [f"output_dir={tmp_path}", "reward.task=math"])
    planned = with_synthetic_inputs(cfg, create=False)  # the dry run: paths only
    assert planned.model.path == str(tmp_path / "base_model") and not (tmp_path / "base_model").exists()
    assert planned.data.train_path == str(tmp_path / "prompts" / "train.jsonl")
    assert planned.data.eval_path == str(tmp_path / "prompts" / "eval.jsonl")  # eval.at_step0 needs one
    made = with_synthetic_inputs(cfg, create=True)
    assert made == planned and (tmp_path / "base_model" / "config.json").is_file()
    rows = [json.loads(line) for line in (tmp_path / "prompts" / "train.jsonl").read_text().splitlines()]
    problems = [(r["prompt"], json.loads(r["label"])["answer"]) for r in rows]
    # every problem of local.task (operands 0-3, + and -: 25), each 16 times: 25 whole rollout batches of 16
    assert len(rows) == 25 * 16 == 25 * cfg.rollout.prompts_per_step and problems[:25] == problems[25:50]
    assert len(set(problems)) == 25 and problems[0] == ("0+0=", "0") and ("3-1=", "2") in problems
    assert json.loads(rows[0]["label"]) == {"task": "math", "answer": "0"}
    evals = (tmp_path / "prompts" / "eval.jsonl").read_text().splitlines()
    assert len(evals) == 25  # evaluation: every problem once
    given = load_config(CPU_CONFIG, [f"model.path={tmp_path}/m", f"data.train_path={tmp_path}/t.jsonl"])
    assert with_synthetic_inputs(given, create=True) == given
    with pytest.raises(ConfigError, match=r"reward.task in \['arithmetic', 'math', 'choice', 'sql'\], got 'arithmetic_exact'"):
        with_synthetic_inputs(load_config(CPU_CONFIG, ["reward.task=arithmetic_exact"]), create=False)
    with pytest.raises(ConfigError, match=r"openrlhf.max_images_per_prompt: 1 and data.image_key: images"):
        with_synthetic_inputs(load_config(CPU_CONFIG, ["reward.task=choice"]), create=False)


def test_reward_outcomes_count_graded_responses():
    counter = RewardOutcomes()
    graded = {"reward": 0.0, "extra_logs": {"reward_timeout": 1.0, "reward_error": 0.0, "reward_no_answer": 0.0}}
    for response in (graded, {"reward": 1.0, "extra_logs": {"reward_no_answer": 0.0}}, {"reward": None, "extra_logs": {}}):
        counter.add(response)
    group = RewardOutcomes()  # the samples generator counts per prompt group and merges a batch's groups
    group.add(graded)
    counter.merge(group)
    assert counter.take() == {"reward/graded": 4.0, "reward/missing": 1.0, "reward/timeouts": 2.0,
                              "reward/errors": 0.0, "reward/no_answer": 0.0}
    assert counter.take()["reward/graded"] == 0.0  # reset per step


def test_grading_time_limit_from_the_environment(monkeypatch):
    from apmpo_openrlhf.rewards import math_grading

    monkeypatch.delenv(math_grading.TIMEOUT_ENV, raising=False)
    assert math_grading.default_timeout() == math_grading.MATH_TIMEOUT_S
    monkeypatch.setenv(math_grading.TIMEOUT_ENV, "2.5")
    assert math_grading.default_timeout() == 2.5
    monkeypatch.setenv(math_grading.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="APMPO_GRADING_TIMEOUT_S must be a number of seconds > 0, got 'soon'"):
        math_grading.default_timeout()


def test_ray_head_processes_are_recorded_and_stopped_by_pid(tmp_path):
    """launch/ray_processes.py on a stand-in for a head: like `ray start`, a launcher that exits and
    leaves a daemon whose command line names the session directory (as Ray's GCS and raylet do),
    and the daemon's child (as the raylet's workers)."""
    import psutil

    session = tmp_path / "session_2026-01-01_00-00-00_1"
    session.mkdir()
    (tmp_path / "session_latest").symlink_to(session)
    child = [sys.executable, "-c", "import time; time.sleep(300)"]
    daemon = [sys.executable, "-c", f"import subprocess, time; subprocess.Popen({child!r}); time.sleep(300)",
              str(session)]
    subprocess.run([sys.executable, "-c", f"import subprocess; subprocess.Popen({daemon!r}, start_new_session=True)"],
                   check=True)
    other = subprocess.Popen(child)  # a process of the same user that is not this head's
    script = REPO / "launch" / "ray_processes.py"
    try:
        for _ in range(100):  # the daemon and its child are up
            procs = [p for p in psutil.process_iter(["cmdline"]) if str(session) in (p.info["cmdline"] or ())]
            if procs and procs[0].children():
                break
            threading.Event().wait(0.1)
        tree = [procs[0].pid, *(c.pid for c in procs[0].children())]
        recorded = subprocess.run([sys.executable, script, "record", tmp_path], capture_output=True, text=True)
        assert recorded.returncode == 0, recorded.stderr
        assert (tmp_path / "head.pids").read_text().split() == [str(tree[0])]
        stopped = subprocess.run([sys.executable, script, "stop", tmp_path], capture_output=True, text=True)
        assert stopped.returncode == 0 and "stopped 2 processes" in stopped.stdout, stopped.stdout + stopped.stderr
        assert not any(psutil.pid_exists(pid) for pid in tree)
        assert other.poll() is None  # left alone
        assert not (tmp_path / "head.pids").exists()
    finally:
        other.kill()
        other.wait()
        for proc in psutil.process_iter(["cmdline"]):
            if str(session) in (proc.info["cmdline"] or ()):
                proc.kill()


def test_the_cpu_backend_refuses_more_than_one_machine(tmp_path, monkeypatch):
    """The file rendezvous (shims 3, 6) works for several Ray nodes of one host, and fails at once,
    with the reason, where a node is on another machine (instead of waiting for peers)."""
    import ray

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / cpu_backend.MACHINE_FILE).write_text(cpu_backend._machine_id())
    monkeypatch.setenv(cpu_backend.RENDEZVOUS_DIR_ENV, str(run_dir))
    assert cpu_backend._rendezvous_file("deepspeed", "k").startswith(str(run_dir))  # the driver's machine
    (run_dir / cpu_backend.MACHINE_FILE).write_text("other-host boot 1234")
    with pytest.raises(RuntimeError, match="belongs to 'other-host boot 1234'.*all its Ray nodes must run on one machine"):
        cpu_backend._rendezvous_file("deepspeed", "k")
    monkeypatch.setenv(cpu_backend.RENDEZVOUS_DIR_ENV, str(tmp_path / "absent"))  # another machine's /tmp
    with pytest.raises(RuntimeError, match="not found on this machine.*needs GPUs"):
        cpu_backend._rendezvous_file("weight_sync", "k")

    def nodes(*hosts):
        return lambda: [{"Alive": True, "NodeManagerHostname": h} for h in hosts] + [
            {"Alive": False, "NodeManagerHostname": "dead-node"}]

    monkeypatch.setattr(ray, "nodes", nodes("box", "box"))  # two nodes of one host
    cpu_backend.check_one_machine()
    monkeypatch.setattr(ray, "nodes", nodes("box", "gpu-node-2"))
    with pytest.raises(RuntimeError, match=r"spans 2 machines \(box, gpu-node-2\)"):
        cpu_backend.check_one_machine()


def _launch(script: str, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **env}
    return subprocess.run([str(REPO / "launch" / script)], env=full_env, capture_output=True, text=True, timeout=60)


def test_launch_scripts_keep_ray_off_public_addresses(tmp_path):
    """Refused before `ray start`: a public or non-IP address, a loopback head with a private node,
    and a second node on loopback outside a namespace whose only interface is loopback."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cluster_network", REPO / "launch" / "cluster_network.py")
    cluster_network = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cluster_network)
    for env, message in [
        ({"RAY_HEAD_IP": "8.8.8.8", "NODE_IP": "10.0.0.2"}, "RAY_HEAD_IP=8.8.8.8 is a public address"),
        ({"RAY_HEAD_IP": "10.0.0.1", "NODE_IP": "head2"}, "NODE_IP='head2' is not an IP address"),
        ({"RAY_HEAD_IP": "127.0.0.1", "NODE_IP": "10.0.0.2"}, "a loopback head takes only loopback nodes"),
    ]:
        proc = _launch("ray_worker.sh", RAY_TMP_DIR=str(tmp_path), **env)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    proc = _launch("ray_head.sh", RAY_TMP_DIR=str(tmp_path), RAY_HEAD_IP="1.1.1.1")
    assert proc.returncode == 2 and "RAY_HEAD_IP=1.1.1.1 is a public address" in proc.stderr, proc.stderr
    if cluster_network.non_loopback_addresses():  # this namespace has a real interface: a loopback second node is refused
        proc = _launch("ray_worker.sh", RAY_TMP_DIR=str(tmp_path), RAY_HEAD_IP="127.0.0.1", NODE_IP="127.0.0.1")
        assert proc.returncode == 2 and "listens on every interface" in proc.stderr and "unshare --net" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing was started
