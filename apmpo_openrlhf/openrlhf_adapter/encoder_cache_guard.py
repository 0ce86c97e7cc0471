"""Reset every vLLM engine's encoder cache after each weight sync (vision-language models).

vLLM keeps the vision encoder's output of every image it has seen (the "encoder cache": the
scheduler's ``EncoderCacheManager`` records which image hashes are cached, the model runner holds the
embeddings) and reuses it when the same image comes again. OpenRLHF 0.11.2 syncs weights into the
engines parameter by parameter (``WorkerWrap.update_weight`` / ``update_weight_cuda_ipc`` ->
``model.load_weights``, trainer/ray/vllm_worker_wrap.py) and never invalidates that cache: with
``freeze_visual_encoder: false`` the vision tower is trained and synced (ppo_actor.py
``broadcast_to_vllm`` syncs every parameter with ``requires_grad``), but an image seen before the
sync (a prompt of an earlier epoch, the same diagram drawn again, the evaluation set) is embedded
with the old encoder: the rollout is then sampled off-policy without any error. On the CPU
backend the in-place reload (``model_runner.reload_weights``) clears the runner's copy but not the
scheduler's record, and the next request with that image fails with "Encoder cache miss".

:class:`EncoderCacheSafeRolloutActor` is OpenRLHF's ``RolloutRayActor`` whose two weight-update
methods, after the last parameter of a sync (OpenRLHF flags it with ``empty_cache=True``,
trainer/ray/ppo_actor.py ``broadcast_to_vllm``), call vLLM's ``reset_encoder_cache()`` (scheduler
and runner, vllm/v1/engine/core.py). :func:`install` points ``create_vllm_engines`` at it (it
instantiates the module global ``RolloutRayActor``), on GPUs and on the CPU backend alike; for a
text-only model the reset is a no-op. With frozen vision weights the embeddings stay valid, and the
reset only costs recomputing them once per image.
"""

from __future__ import annotations

import ray
from openrlhf.trainer.ray.vllm_engine import RolloutRayActor


class EncoderCacheSafeRolloutActorImpl(RolloutRayActor.__ray_actor_class__):
    """``RolloutRayActor`` that drops the engine's cached image embeddings after every weight sync."""

    async def update_weight(self, name, dtype, shape, empty_cache=False):
        result = await super().update_weight(name, dtype, shape, empty_cache)
        if empty_cache:
            await self.reset_encoder_cache()
        return result

    async def update_weight_cuda_ipc(self, name, dtype, shape, ipc_handles, empty_cache=False):
        result = await super().update_weight_cuda_ipc(name, dtype, shape, ipc_handles, empty_cache)
        if empty_cache:
            await self.reset_encoder_cache()
        return result

    async def reset_encoder_cache(self):
        """vLLM's reset: the scheduler's record and the model runner's embeddings."""
        await self.llm.reset_encoder_cache()
        self.encoder_cache_resets = getattr(self, "encoder_cache_resets", 0) + 1

    def get_encoder_cache_resets(self) -> int:
        """How many syncs reset the cache (read by the tests)."""
        return getattr(self, "encoder_cache_resets", 0)


EncoderCacheSafeRolloutActor = ray.remote(EncoderCacheSafeRolloutActorImpl)


def install():
    """Make ``create_vllm_engines`` start :class:`EncoderCacheSafeRolloutActor`; returns a function
    that puts OpenRLHF's class back."""
    import openrlhf.trainer.ray.vllm_engine as vllm_engine_module

    original = vllm_engine_module.RolloutRayActor
    vllm_engine_module.RolloutRayActor = EncoderCacheSafeRolloutActor

    def restore() -> None:
        vllm_engine_module.RolloutRayActor = original

    return restore


def installed() -> bool:
    """Whether ``create_vllm_engines`` starts the guarded actor (possibly through the CPU backend's
    wrapper, which keeps the class it wraps in ``actor_class``)."""
    import openrlhf.trainer.ray.vllm_engine as vllm_engine_module

    actor = vllm_engine_module.RolloutRayActor
    return getattr(actor, "actor_class", actor) is EncoderCacheSafeRolloutActor
