"""The paper's cluster layout on the CPU, run the way users run it: colocate_all with vLLM and
DeepSpeed sleep mode, ZeRO-3, gradient checkpointing, 2 actor ranks, 2 reference ranks, 2 engines
(configs/local/openrlhf_cpu_colocated.yaml), then resumed on two Ray nodes of this machine.

1. ``python -m apmpo_openrlhf.train --config configs/local/openrlhf_cpu_colocated.yaml --set max_steps=2``
   (Ray in-process on 127.0.0.1): OpenRLHF's own colocate_all (one placement group of 2 bundles,
   0.2-GPU actors and engines) and sleep-mode call order under the sleep contract
   (sleep_contract.py), evaluation at step 0, the weight-sync check on both engines after every step
   (it wakes and re-sleeps them), a checkpoint per step.
2. Resume (the config's 3 steps): inside a network namespace with only loopback, a head
   (launch/ray_head.sh) and a worker node (launch/ray_worker.sh) with one logical GPU each, the job
   submitted with launch/submit.sh (``ray job submit``), placement read from Ray's state API, both
   nodes stopped by process id (launch/ray_stop.sh). The resumed step is the episode's last: 1 of the
   25 prompts (not a multiple of the train batch or of the 2 ranks); both ranks, on different nodes,
   take the same optimizer steps (read from each rank's DeepSpeed checkpoint) and the engine on the
   other node gets the actor's weights. Where a network namespace is not permitted, the resume runs
   in-process and the test reports the two-node part as skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONFIG = "configs/local/openrlhf_cpu_colocated.yaml"
GROUP_SIZE, PROMPTS_PER_STEP, PROMPTS = 4, 12, 25  # the config; the synthetic task has 25 problems
OPTIMIZER_STEPS_PER_ROLLOUT = 2  # 48 samples, train batch 24
RANKS = 2


def _load(name: str, path: Path):
    # pytest's importlib mode makes the test helpers unimportable by name (OpenRLHF's wheel owns `tests`)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cpu_loop = _load("cpu_loop_for_colocated", HERE / "test_cpu_loop.py")  # its per-step checks
pytestmark = [mark for mark in cpu_loop.pytestmark if mark.name != "timeout"] + [pytest.mark.timeout(2400)]


def train(loop, ray_tmp: Path, out: Path, *overrides: str) -> str:
    """The user's command; its terminal output followed by the run's pipeline.log (Ray's and vLLM's
    INFO lines go there)."""
    args = [sys.executable, "-m", "apmpo_openrlhf.train", "--config", CONFIG, "--set", f"output_dir={out}"]
    for item in overrides:
        args += ["--set", item]
    proc = subprocess.run(args, cwd=REPO, env=loop.env(ray_tmp), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-8000:]
    return proc.stdout + proc.stderr + (out / "pipeline.log").read_text()


def ranks_did(checkpoint: Path) -> list[dict]:
    """What each actor rank did, from its own DeepSpeed checkpoint files: DeepSpeed's optimizer-step
    counter, torch Adam's step count of its parameter partition, and whether DeepSpeed's
    offload_states moved its Adam states (the offload buffers it leaves in the optimizer state)."""
    did = []
    for rank in range(RANKS):
        model = torch.load(checkpoint / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt", map_location="cpu",
                           weights_only=False)
        optim = torch.load(checkpoint / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt", map_location="cpu",
                           weights_only=False)["optimizer_state_dict"]["optimizer_state_dict"]["state"]
        did.append({"global_steps": model["global_steps"],
                    "adam_steps": sorted({int(s["step"]) for s in optim.values()}),
                    "offloaded_by_deepspeed": all("exp_avg_offload_buffer" in s for s in optim.values())})
    return did


def check_engines(logs: dict, steps: list[int]) -> None:
    for step in steps:
        for engine in range(RANKS):  # each engine's log-probs equal the actor's after the broadcast
            assert logs[f"train/weight_sync/max_abs_logprob_diff/engine_{engine}"][step] < cpu_loop.SYNC_TOL


def network_namespace() -> str | None:
    """None if this process may create a network namespace (``unshare --net``), else why not."""
    if not shutil.which("unshare"):
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare --net is not permitted here: {probe.stderr.strip()}"


def resume_on_two_nodes(loop, out: Path, tmp_path: Path) -> dict:
    head_tmp = Path(tempfile.mkdtemp(prefix="apmpo_head_", dir="/tmp"))
    worker_tmp = Path(tempfile.mkdtemp(prefix="apmpo_worker_", dir="/tmp"))
    result_file = tmp_path / "two_nodes.json"
    env = loop.env(head_tmp)
    try:
        proc = subprocess.run(
            ["unshare", "--net", sys.executable, str(HERE / "two_node_cluster.py"), str(result_file), str(head_tmp),
             str(worker_tmp), CONFIG, "--set", f"output_dir={out}"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
        )
    finally:
        # after a timeout or a crash: stop what is left by process id (no network needed for that)
        for tmp in (worker_tmp, head_tmp):
            if any(tmp.glob("*.pids")):
                subprocess.run(["launch/ray_stop.sh"], cwd=REPO, env={**env, "RAY_TMP_DIR": str(tmp)}, timeout=120)
    leftovers = [p.pid for p in psutil.process_iter(["cmdline"])
                 if any(str(t) in part for t in (head_tmp, worker_tmp) for part in (p.info["cmdline"] or ()))]
    assert not leftovers, f"processes of the two Ray nodes are still running: {leftovers}"
    shutil.rmtree(head_tmp, ignore_errors=True)
    shutil.rmtree(worker_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads(result_file.read_text())


def check_two_node_placement(result: dict) -> None:
    for part in ("head", "worker", "submit", "stop_worker", "stop_head"):
        assert result[part]["rc"] == 0, (part, result[part]["out"][-3000:], result[part]["err"][-6000:])
    assert "succeeded" in result["submit"]["out"] + result["submit"]["err"]
    assert "stopped" in result["stop_worker"]["out"] and "stopped" in result["stop_head"]["out"]
    assert result["interfaces"] == ["lo"]  # the namespace had loopback only ...
    assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1", "0.0.0.0", "::") for ip, _, _ in result["sockets"])
    nodes = {n["node_id"]: n for n in result["nodes"]}
    assert len(nodes) == 2 and all(n["ip"] == "127.0.0.1" and n["gpus"] == 1 for n in nodes.values())
    placed: dict[str, list[str]] = {}
    for actor in result["actors"]:
        placed.setdefault(actor["class_name"], []).append(actor["node_id"])
    # OpenRLHF's colocate_all placement group spans both nodes: each holds one bundle with an actor
    # rank, a reference rank and an engine (asserted from Ray's state API, not assumed)
    for role in ("APMPOPolicyModelActorImpl", "ReferenceModelActor", "SleepContractRolloutActorImpl"):
        assert sorted(placed.get(role, [])) == sorted(nodes), (role, placed)


def test_colocated_layout_trains_resumes_on_two_nodes_and_keeps_ranks_in_step(tmp_path, ray_tmp, openrlhf_loop):
    loop = openrlhf_loop
    out = tmp_path / "run"
    log = train(loop, ray_tmp, out, "max_steps=2")
    # the engines are the sleep contract's, and vLLM's own sleep ran (its executor's log line)
    assert "SleepContractRolloutActorImpl" in log and "seconds to fall asleep" in log
    first = loop.scalars(loop.event_files(out)[0])
    assert first["eval/eval_num_samples"][0] == PROMPTS * 2  # eval at step 0, with the engines woken and re-slept
    cpu_loop.check_steps(loop, first, [1, 2])
    check_engines(first, [1, 2])
    assert first["train/weight_sync/max_abs_logprob_diff_before_training"][1] < cpu_loop.SYNC_TOL
    for step in (1, 2):
        assert first["train/reward/graded"][step] == PROMPTS_PER_STEP * GROUP_SIZE
    did = ranks_did(out / "checkpoints" / "_actor" / "global_step2")
    steps = 2 * OPTIMIZER_STEPS_PER_ROLLOUT
    assert did == [{"global_steps": steps, "adam_steps": [steps], "offloaded_by_deepspeed": True}] * RANKS

    reason = network_namespace()
    if reason is None:
        result = resume_on_two_nodes(loop, out, tmp_path)
        check_two_node_placement(result)
        # the job's output, as `ray job submit` follows it, and the run's pipeline.log (INFO lines)
        log = Path(result["submit"]["log"]).read_text() + (out / "pipeline.log").read_text()
    else:
        log = train(loop, ray_tmp, out)
    assert f"Loading the checkpoint: {out / 'checkpoints' / '_actor'}" in log
    files = loop.event_files(out)
    assert len(files) == 2
    second = loop.scalars(files[1])
    # no second evaluation at step 0; the end-of-run evaluation after step 3 (engines woken and re-slept)
    assert sorted(second["eval/eval_num_samples"]) == [3]
    cpu_loop.check_steps(loop, second, [3], learned_before=loop.learned(first, 1) or loop.learned(first, 2))
    check_engines(second, [3])  # with two nodes: one engine is on the other node than actor rank 0
    # the episode's last batch (the config keeps one copy of the prompt file's 25 problems with
    # OpenRLHF's --data.max_samples): 25 - 2 x 12 = 1 prompt, a short window of one optimizer step on each rank
    assert second["train/rollout/num_groups"][3] == PROMPTS - 2 * PROMPTS_PER_STEP
    assert second["train/reward/graded"][3] == GROUP_SIZE
    did = ranks_did(out / "checkpoints" / "_actor" / "global_step3")
    assert did == [{"global_steps": steps + 1, "adam_steps": [steps + 1], "offloaded_by_deepspeed": True}] * RANKS
    if reason is not None:
        pytest.skip(f"resumed in-process; the two-node part did not run: {reason}")
