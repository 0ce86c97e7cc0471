"""The OpenRLHF additions for vision-language models, piece by piece (the whole loop: test_vl_loop.py).

- encoder_cache_guard.py: OpenRLHF's ``RolloutRayActor`` methods, unchanged, on a recording engine
  client (vLLM itself is exercised by the loop test on the ``update_weight`` path): the cache is
  reset after the last parameter of a sync, on both update paths, and only then;
- vlm_outputs.py: the processor files a saved folder lacks are copied, nothing is overwritten.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from apmpo_openrlhf.openrlhf_adapter import encoder_cache_guard
from apmpo_openrlhf.openrlhf_adapter.vlm_outputs import PROCESSOR_FILES, copy_processor_files


class RecordingEngineClient:
    """Records the calls OpenRLHF's RolloutRayActor makes on vLLM's AsyncLLM."""

    def __init__(self):
        self.calls = []

    async def collective_rpc(self, method, args=()):
        self.calls.append((method, args[0]))

    async def reset_encoder_cache(self):
        self.calls.append(("reset_encoder_cache", None))


def guarded_actor(actor_class=encoder_cache_guard.EncoderCacheSafeRolloutActorImpl):
    actor = actor_class.__new__(actor_class)
    actor.llm = RecordingEngineClient()
    return actor


def _engine_actor_classes():
    from apmpo_openrlhf.openrlhf_adapter import sleep_contract

    # the GPU path's engine actor, and the CPU backend's (the sleep contract's, which subclasses it)
    return [encoder_cache_guard.EncoderCacheSafeRolloutActorImpl, sleep_contract.SleepContractRolloutActorImpl]


@pytest.mark.parametrize("actor_class", _engine_actor_classes(), ids=["gpu_path", "cpu_backend"])
@pytest.mark.parametrize("path", ["update_weight", "update_weight_cuda_ipc"])
def test_encoder_cache_is_reset_after_the_last_parameter_of_each_sync(path, actor_class):
    actor = guarded_actor(actor_class)
    names = ["model.visual.patch_embed.proj.weight", "model.language_model.layers.0.mlp.up_proj.weight", "lm_head.weight"]

    async def sync():
        for i, name in enumerate(names):
            extra = {"ipc_handles": {}} if path == "update_weight_cuda_ipc" else {}
            await getattr(actor, path)(name, torch.float32, (2, 2), empty_cache=i == len(names) - 1, **extra)

    asyncio.run(sync())
    asyncio.run(sync())
    expected = [(path, n) for n in names] + [("reset_encoder_cache", None)]
    assert actor.llm.calls == expected * 2
    assert actor.get_encoder_cache_resets() == 2


def test_guard_is_installed_for_create_vllm_engines_and_restored():
    import openrlhf.trainer.ray.vllm_engine as vllm_engine_module

    original = vllm_engine_module.RolloutRayActor
    restore = encoder_cache_guard.install()
    try:
        assert vllm_engine_module.RolloutRayActor is encoder_cache_guard.EncoderCacheSafeRolloutActor
        assert encoder_cache_guard.installed()
    finally:
        restore()
    assert vllm_engine_module.RolloutRayActor is original and not encoder_cache_guard.installed()


def test_cpu_engine_actor_has_the_guard_in_a_ray_worker():
    """A Ray worker imports the CPU backend's engine actor module without the driver's patches, while
    Ray ships the actor's methods from the driver (tracing wrappers set on the class, pickled by
    value) and resolves its base classes by name in the worker. The guard must be a base there too:
    when the base was read from OpenRLHF's patched module global, the worker's class lacked it and the
    guard's ``super()`` failed in the first weight sync (the actor then waited 5 min in the broadcast)."""
    import subprocess
    import sys

    code = ("from apmpo_openrlhf.openrlhf_adapter.sleep_contract import SleepContractRolloutActorImpl as actor\n"
            "from apmpo_openrlhf.openrlhf_adapter.encoder_cache_guard import EncoderCacheSafeRolloutActorImpl as guard\n"
            "import openrlhf.trainer.ray.vllm_engine as m\n"
            "assert issubclass(actor, guard) and issubclass(actor, m.RolloutRayActor.__ray_actor_class__), actor.__mro__")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_processor_files_are_added_not_overwritten(tmp_path):
    base, saved = tmp_path / "base", tmp_path / "final_model"
    base.mkdir()
    saved.mkdir()
    for name in PROCESSOR_FILES:
        (base / name).write_text(f"base {name}")
    (saved / "chat_template.jinja").write_text("saved template")  # OpenRLHF's tokenizer wrote one
    copied = copy_processor_files(base, saved)
    assert set(copied) == set(PROCESSOR_FILES) - {"chat_template.jinja"}
    assert (saved / "chat_template.jinja").read_text() == "saved template"
    assert all((saved / name).read_text() == f"base {name}" for name in copied)
    assert copy_processor_files(base, saved) == []
