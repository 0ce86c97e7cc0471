"""Two real DeepSpeed ZeRO-3 actor ranks (two processes, gloo on loopback) train on a short rollout
batch: every rank gets the same samples and takes the same optimizer steps (no rank left waiting in
a collective), the short last window included. The ranks run two_rank_worker.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parent / "two_rank_worker.py"
TIMEOUT_S = 400


@pytest.mark.slow
def test_two_zero3_ranks_take_the_same_steps_on_a_short_batch(tiny_model_dir, tmp_path):
    """12 samples (3 prompts x 4), train batch 8, micro-batch 2, 2 ranks: gas 2. Each rank trains on
    6 samples = 3 micro-batches = a full window and a short one, so 2 optimizer steps on both ranks.
    (OpenRLHF's own split deals 8 / 4 samples here: rank 1 stops after one step while rank 0 waits
    for it in its next ZeRO-3 all-gather; seen: the wait ends only when rank 1's process exits.)"""
    with socket.socket() as s:  # DeepSpeed wants the env:// variables; the group itself rendezvous by file
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": "2", "TOKENIZERS_PARALLELISM": "false"}
    store = tmp_path / "store"
    procs = [
        subprocess.Popen([sys.executable, str(WORKER), str(rank), str(store), str(tiny_model_dir),
                          str(tmp_path / f"rank{rank}.json")],
                         env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(2)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(2)]
    assert [r["samples"] for r in results] == [6, 6]
    assert [r["gas"] for r in results] == [2, 2]
    assert [r["optimizer_steps"] for r in results] == [2, 2]
    assert results[0]["grad_norm"] == results[1]["grad_norm"] > 0  # one global gradient, all-reduced
    assert results[0]["weight"] == results[1]["weight"]
