"""One of two DeepSpeed ZeRO-3 actor ranks (gloo on CPU) for test_two_ranks.py; not a test module.

``python two_rank_worker.py RANK STORE_FILE MODEL_DIR RESULT_FILE``: builds the patched actor through
OpenRLHF's init path with 2 data-parallel ranks, makes a short rollout batch (3 prompts x 4, not a
multiple of train.batch_size 8), trims and splits it with the APMPO trainer / experience maker, takes
this rank's chunk the way ``RayActorGroup.async_run_method_batch`` slices it, trains (``fit``) and
writes the rank's sample count and DeepSpeed optimizer steps as JSON.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))


def _load(name: str, path: Path):
    # pytest's importlib mode makes the test helpers unimportable by name (OpenRLHF's wheel owns `tests`)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(rank: int, store: str, model_dir: str, result: str) -> None:
    import torch.distributed as dist

    import apmpo_openrlhf.openrlhf_adapter  # noqa: F401  (the flash_attn stand-in, before OpenRLHF)

    torch.set_num_threads(1)
    conftest = _load("openrlhf_conftest", HERE / "conftest.py")
    harness = _load("actor_harness", HERE / "test_actor_training_step.py")
    harness._skip_shm_comm_build()
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)

    from openrlhf.utils import get_strategy

    from apmpo_openrlhf.openrlhf_adapter.experience import APMPOExperienceMaker, data_parallel_unit
    from apmpo_openrlhf.openrlhf_adapter.trainer import whole_units

    _, args, actor = harness.build_actor(
        conftest.openrlhf_args, Path(model_dir), "apmpo", micro_batch_size=2,
        extra=["train.grad_clip=1000", "openrlhf.num_gpus_per_node=2", "openrlhf.vllm_num_engines=2",
               "openrlhf.rollout_micro_batch_size=4", "rollout.prompts_per_step=4"],
    )
    rewards = torch.tensor([1.0, 0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 1])
    samples = conftest.make_rollout(rewards, torch.Generator().manual_seed(0))
    maker = APMPOExperienceMaker(None, None, None, None, None, get_strategy(args), type("T", (), {"pad_token_id": 0}))
    micro_batches = maker.split_rollout_samples(whole_units(samples, data_parallel_unit(args, 4)))
    gen = torch.Generator().manual_seed(1)
    for e in micro_batches:  # old / reference log-probs off the policy, the same on both ranks
        e.action_log_probs = -2.0 + 0.3 * torch.randn(e.action_mask.shape, generator=gen)
        e.base_action_log_probs = e.action_log_probs + 0.05 * torch.randn(e.action_mask.shape, generator=gen)
        e.kl = torch.zeros_like(e.action_log_probs)
    micro_batches = maker.compute_advantages_and_returns(micro_batches)
    chunk = math.ceil(len(micro_batches) / 2)  # RayActorGroup.async_run_method_batch's contiguous chunks
    mine = micro_batches[rank * chunk : (rank + 1) * chunk]
    for e in mine:
        actor.append(e)
    with harness.cpu_shims("cpu"):
        status = actor.fit(kl_ctl=args.algo.kl.init_coef)
    Path(result).write_text(json.dumps({
        "rank": rank, "samples": sum(len(e.sequences) for e in mine), "gas": actor.strategy.accumulated_gradient,
        "optimizer_steps": actor.actor.model.global_steps, "grad_norm": status["actor_grad_norm"],
        "weight": float(harness.gathered_weight(actor).double().sum()),
    }))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
