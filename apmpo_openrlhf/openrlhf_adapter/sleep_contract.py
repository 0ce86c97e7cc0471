"""Sleep mode on the CPU backend: the GPU's contract, enforced (``colocate_all`` with
``openrlhf.vllm_enable_sleep`` / ``openrlhf.ds_enable_sleep``).

On a GPU, colocated vLLM engines and DeepSpeed ranks take turns with the GPU memory: OpenRLHF puts
the engines to sleep while the actor trains and offloads the actor's optimizer states while the
engines generate (OPENRLHF_NOTES.md, "Colocated layout with sleep mode: the call order"). A call in
the wrong state does not fail cleanly there: it waits forever, reads freed memory or crashes the
device. On the CPU there is no memory to free, so this module keeps the *state* exactly as vLLM
0.29 and DeepSpeed 0.19.6 keep it and refuses, with :class:`SleepContractError` naming the engine
or rank and its state, every call the GPU would not serve. A run that passes here makes the same
calls in the same order as one that works on GPUs.

vLLM (:class:`EngineSleepState`, held by :class:`SleepContractRolloutActor`, which stands in for
OpenRLHF's ``RolloutRayActor`` on the CPU backend). vLLM's CPU platform refuses
``enable_sleep_mode`` (vllm/config/model.py:606), so the engine is started without it; its own
``sleep`` / ``wake_up`` still run (the engine core pauses its scheduler, the executor tracks the
sleeping tags; only the CPU worker's memory step is a no-op, v1/worker/cpu_worker.py:192-198), and
after every call the emulated state is checked against the engine's own ``is_sleeping()``.
The rules (v1/engine/core.py:887-945, v1/executor/abstract.py:337-375, v1/worker/gpu_worker.py:237-300):

- ``sleep(0)`` pauses scheduling only; ``sleep(1)`` also offloads the weights to host memory and
  discards the KV cache; ``sleep(2)`` discards both (the weights must be loaded again after waking).
  A sleep while any tag still sleeps changes nothing but the scheduler pause (vLLM: "Executor is
  already sleeping").
- ``wake_up(tags)`` wakes the given tags (None: all); a tag that is not asleep makes the whole call a
  no-op (vLLM warns and returns). Scheduling resumes only when no tag sleeps. OpenRLHF's
  ``wake_up(None)`` wakes "weights" then "kv_cache", one call each (trainer/ray/vllm_engine.py:136-151).
- Refused here: any generation (sampling or prompt log-probs) unless everything is awake (a GPU
  engine queues the request in its paused scheduler until then: the caller waits forever), or after
  ``sleep(2)`` before the weights were loaded again (uninitialised memory); a weight update while the
  weights sleep (unmapped memory); ``sleep`` while requests are in flight (vLLM aborts them, the
  callers get truncated outputs); ``sleep`` on an engine created without sleep mode.

DeepSpeed (:func:`install_deepspeed_contract`, in every Ray worker of the CPU backend): OpenRLHF's
``offload_deepspeed_states`` / ``reload_deepspeed_states`` run DeepSpeed's real ``offload_states``
/ ``reload_states`` (utils/deepspeed/deepspeed_utils.py:151-211), which record what is offloaded
in the ZeRO optimizer's ``offloaded_states``: OpenRLHF offloads optimizer states, the contiguous
gradient buffer, the fp32 master parameters (hp_params) and the low-precision gradients
(lp_grads); the low-precision parameters (lp_params) stay, so forwards are legal while offloaded.
What each engine call needs resident (:data:`RESIDENT_STATES_NEEDED`): a forward needs lp_params; a
backward also the gradient partitions and buckets; an optimizer step the gradients, the master
parameters and the optimizer states. A call whose states are offloaded raises.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from dataclasses import dataclass, field

import ray
import torch

from .encoder_cache_guard import EncoderCacheSafeRolloutActorImpl

logger = logging.getLogger(__name__)

ENGINE_TAGS = ("weights", "kv_cache")  # vLLM's sleep-mode allocation tags, in OpenRLHF's wake-up order
SCHEDULING_TAG = "scheduling"  # wake_up(["scheduling"]) ends a level-0 sleep
# What a DeepSpeed engine call reads or writes (ZeRO OffloadStateTypeEnum values).
RESIDENT_STATES_NEEDED = {
    "forward": ("lp_params",),
    "backward": ("lp_params", "lp_grads", "contiguous_grad_buffer"),
    "step": ("lp_params", "lp_grads", "hp_params", "optim_states"),
}
# The weight-update calls of OpenRLHF's worker extension, and the position of their "last tensor
# of the broadcast" flag (trainer/ray/vllm_worker_wrap.py, ppo_actor.py:427).
WEIGHT_UPDATE_LAST_FLAG = {"update_weight": 3, "update_weight_cuda_ipc": 4}


class SleepContractError(RuntimeError):
    """A call that a GPU would not serve in the engine's or rank's current sleep state."""


# ── vLLM ─────────────────────────────────────────────────────────────────────────────────────


@dataclass
class EngineSleepState:
    """What of one vLLM engine sleeps, with vLLM 0.29's transitions (see the module docstring)."""

    name: str
    sleep_mode: bool
    sleeping: set[str] = field(default_factory=set)
    scheduling_paused: bool = False
    level: int | None = None
    weights_discarded: bool = False  # sleep(2) dropped them; cleared by a complete weight update

    @property
    def is_sleeping(self) -> bool:
        """vLLM's ``is_sleeping()``: scheduling paused or any tag asleep."""
        return self.scheduling_paused or bool(self.sleeping)

    def describe(self) -> str:
        if not self.is_sleeping:
            state = "awake"
        elif not self.sleeping:
            state = "scheduling paused (sleep level 0)"
        else:
            awake = [t for t in ENGINE_TAGS if t not in self.sleeping]
            state = f"asleep since sleep(level={self.level}): {', '.join(sorted(self.sleeping))}"
            if awake:
                state += f"; awake: {', '.join(awake)}"
        if self.weights_discarded:
            state += "; weights discarded by sleep(level=2) and not loaded since"
        return state

    def as_dict(self) -> dict:
        return {"name": self.name, "sleeping": sorted(self.sleeping), "scheduling_paused": self.scheduling_paused,
                "level": self.level, "weights_discarded": self.weights_discarded, "is_sleeping": self.is_sleeping}

    def _refuse(self, call: str, why: str) -> None:
        raise SleepContractError(f"{self.name}: {call} while {self.describe()}: {why}")

    def sleep(self, level: int, in_flight: int = 0) -> None:
        if level not in (0, 1, 2):
            raise ValueError(f"{self.name}: sleep level must be 0, 1 or 2, got {level!r}")
        if not self.sleep_mode:
            self._refuse(f"sleep(level={level})", "the engine was created without enable_sleep_mode "
                         "(openrlhf.vllm_enable_sleep); on a GPU nothing would be freed")
        if in_flight:
            self._refuse(f"sleep(level={level})", f"{in_flight} request(s) in flight would be aborted "
                         "(vLLM pauses with mode='abort': their callers get truncated outputs)")
        self.scheduling_paused = True  # the engine core pauses first, whatever the executor does
        if level == 0:
            return
        if self.sleeping:  # vLLM: "Executor is already sleeping." -- the awake tags stay awake
            logger.debug("%s: sleep(level=%d) while partly asleep changes nothing (vLLM ignores it): %s",
                           self.name, level, self.describe())
            return
        self.sleeping = set(ENGINE_TAGS)
        self.level = level
        if level == 2:
            self.weights_discarded = True

    def wake_up(self, tags: list[str] | None) -> None:
        executor_tags = None if tags is None else [t for t in tags if t != SCHEDULING_TAG]
        if executor_tags is None or executor_tags:
            if not self.sleeping:
                logger.debug("%s: wake_up(%s) while no tag sleeps changes nothing", self.name, tags)
            elif executor_tags and any(t not in self.sleeping for t in executor_tags):
                # vLLM warns "Tag ... is not in sleeping tags" and returns without waking any tag
                logger.debug("%s: wake_up(%s) names a tag that is not asleep (%s): nothing woken",
                               self.name, tags, self.describe())
            else:
                self.sleeping -= set(ENGINE_TAGS if executor_tags is None else executor_tags)
        if not self.sleeping:
            self.scheduling_paused = False
            self.level = None

    def require_generation(self, call: str) -> None:
        if self.is_sleeping:
            self._refuse(call, "a GPU engine queues the request until everything is awake (the caller waits "
                         "forever); wake_up() first")
        if self.weights_discarded:
            self._refuse(call, "the engine would sample from uninitialised weights; load them (a complete "
                         "weight update) first")

    def require_weights_awake(self, call: str) -> None:
        if "weights" in self.sleeping:
            self._refuse(call, "the weights' memory is unmapped on a GPU; wake_up(tags=['weights']) first")


class _ContractedLLM:
    """vLLM's AsyncLLM with :class:`EngineSleepState` checked and kept at every call OpenRLHF's
    ``RolloutRayActor`` makes on it (``self.llm``); everything else passes through."""

    def __init__(self, llm, state: EngineSleepState):
        self._llm, self._state, self._in_flight = llm, state, 0

    def __getattr__(self, name):
        return getattr(self._llm, name)

    async def _agree_with_vllm(self, call: str) -> None:
        vllm_sleeping = await self._llm.is_sleeping()
        if vllm_sleeping != self._state.is_sleeping:
            raise SleepContractError(
                f"{self._state.name}: after {call} vLLM reports is_sleeping()={vllm_sleeping}, the emulated state "
                f"is {self._state.describe()}: this module no longer follows vLLM's sleep mode"
            )

    async def sleep(self, level: int = 1, **kwargs) -> None:
        self._state.sleep(level, self._in_flight)
        await self._llm.sleep(level=level, **kwargs)
        await self._agree_with_vllm(f"sleep(level={level})")

    async def wake_up(self, tags: list[str] | None = None) -> None:
        self._state.wake_up(tags)
        await self._llm.wake_up(tags=tags)
        await self._agree_with_vllm(f"wake_up(tags={tags})")

    def generate(self, *args, **kwargs):
        self._state.require_generation("generate()")
        return self._counted(self._llm.generate(*args, **kwargs))

    async def _counted(self, outputs):
        self._in_flight += 1
        try:
            async for output in outputs:
                yield output
        finally:
            self._in_flight -= 1

    async def collective_rpc(self, method, *args, **kwargs):
        rpc_args = kwargs.get("args", args[1] if len(args) > 1 else ())
        if method in WEIGHT_UPDATE_LAST_FLAG:
            self._state.require_weights_awake(f"{method}({rpc_args[0]!r})")
        result = await self._llm.collective_rpc(method, *args, **kwargs)
        last = WEIGHT_UPDATE_LAST_FLAG.get(method)
        if last is not None and len(rpc_args) > last and rpc_args[last]:
            self._state.weights_discarded = False  # the last tensor of a complete broadcast arrived
        return result


def quiet_cpu_worker_sleep(worker_class) -> None:
    """vLLM's CPU worker warns at every sleep / wake_up that sleep mode is ignored; here its state is
    kept above it (:class:`_ContractedLLM`), so say that once instead."""
    if getattr(worker_class, "_apmpo_sleep_contract", False):
        return

    def sleep(self, level: int = 1) -> None:
        logger.debug("vLLM CPU worker: sleep(level=%d): host memory stays allocated (sleep_contract.py)", level)

    def wake_up(self, tags=None) -> None:
        logger.debug("vLLM CPU worker: wake_up(tags=%s) (sleep_contract.py)", tags)

    logger.info("vLLM CPU worker: sleep mode frees no host memory; the engine's sleep state is kept and "
                "enforced by apmpo_openrlhf's sleep_contract.py")
    worker_class.sleep, worker_class.wake_up = sleep, wake_up
    worker_class._apmpo_sleep_contract = True


class SleepContractRolloutActorImpl(EncoderCacheSafeRolloutActorImpl):
    """OpenRLHF's RolloutRayActor on the CPU backend: the same engine and methods (with the encoder-cache
    reset after each weight sync), with vLLM's sleep state kept by :class:`EngineSleepState` (created by
    ``cpu_backend.install_driver_shims``). The base class is named, not read from OpenRLHF's module
    global: the driver replaces that global (``encoder_cache_guard.install``) while a Ray worker
    imports this module unpatched, and a base that depends on import order made the two processes
    build different classes (the guard's ``super()`` then failed inside the engine actor)."""

    async def __init__(self, *args, engine_index: int | None = None, enable_sleep_mode: bool = False, **kwargs):
        node = ray.get_runtime_context().get_node_id()[:8] if ray.is_initialized() else "local"
        name = f"vLLM engine {engine_index if engine_index is not None else '?'} (node {node}, pid {os.getpid()})"
        self.sleep_contract = EngineSleepState(name, sleep_mode=enable_sleep_mode)
        # vLLM's CPU platform refuses enable_sleep_mode; its sleep/wake_up work without it
        await super().__init__(*args, enable_sleep_mode=False, **kwargs)
        self.llm = _ContractedLLM(self.llm, self.sleep_contract)

    def sleep_state(self) -> dict:
        """The engine's sleep state (for tests and the weight-sync check's consistency check)."""
        return self.sleep_contract.as_dict()


SleepContractRolloutActor = ray.remote(SleepContractRolloutActorImpl)


class NumberedRolloutActors:
    """Stands in for the Ray actor class in ``create_vllm_engines``: the engines are created in
    order, one ``.options(...).remote(...)`` each (trainer/ray/vllm_engine.py:300-306); each gets its
    index (for the messages) and the contract class."""

    def __init__(self, actor_class=SleepContractRolloutActor):
        self.actor_class, self.created = actor_class, 0

    def options(self, **options):
        handle, index = self.actor_class.options(**options), self.created
        self.created += 1

        class _Options:
            @staticmethod
            def remote(*args, **kwargs):
                return handle.remote(*args, engine_index=index, **kwargs)

        return _Options


# ── DeepSpeed ────────────────────────────────────────────────────────────────────────────────


def _offloaded(engine) -> set[str]:
    states = getattr(getattr(engine, "optimizer", None), "offloaded_states", None) or ()
    return {getattr(s, "value", str(s)) for s in states}


def _rank_name() -> str:
    dist = torch.distributed
    name = f"DeepSpeed rank {dist.get_rank()} of {dist.get_world_size()}" if dist.is_initialized() else "DeepSpeed"
    node = f"node {ray.get_runtime_context().get_node_id()[:8]}, " if ray.is_initialized() else ""
    return f"{name} ({node}pid {os.getpid()})"


def require_resident(engine, call: str) -> None:
    """Raise if ``call`` (forward / backward / step) needs a state that is offloaded."""
    missing = sorted(set(RESIDENT_STATES_NEEDED[call]) & _offloaded(engine))
    if missing:
        raise SleepContractError(
            f"{_rank_name()}: {call}() while {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} offloaded (offloaded: {', '.join(sorted(_offloaded(engine)))}); "
            "on a GPU these live in host memory until reload_states(): call it first"
        )


@contextlib.contextmanager
def _torch_adam_as_fused_adam(optimizer):
    """DeepSpeed's ZeRO-3 ``offload_states`` accepts only its FusedAdam (stage3.py:3585), a CUDA
    kernel; the CPU backend trains with torch's Adam(W) (cpu_backend shim 4), whose states have
    the keys ``offload_adam_states`` moves (exp_avg, exp_avg_sq). For the check only, torch's class
    is FusedAdam."""
    import deepspeed.ops.adam.fused_adam as fused_adam

    real = fused_adam.FusedAdam
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        fused_adam.FusedAdam = type(optimizer)
    try:
        yield
    finally:
        fused_adam.FusedAdam = real


def install_deepspeed_contract() -> None:
    """Guard DeepSpeedEngine's forward / backward / step and let ZeRO-3 offload torch's Adam states."""
    from deepspeed.runtime.engine import DeepSpeedEngine
    from deepspeed.runtime.zero.stage3 import DeepSpeedZeroOptimizer_Stage3

    if getattr(DeepSpeedEngine, "_apmpo_sleep_contract", False):
        return
    for call in RESIDENT_STATES_NEEDED:
        original = getattr(DeepSpeedEngine, call)

        @functools.wraps(original)
        def guarded(self, *args, _call=call, _original=original, **kwargs):
            require_resident(self, _call)
            return _original(self, *args, **kwargs)

        setattr(DeepSpeedEngine, call, guarded)
    offload_states = DeepSpeedZeroOptimizer_Stage3.offload_states

    @functools.wraps(offload_states)
    def offload_torch_adam_states(self, *args, **kwargs):
        with _torch_adam_as_fused_adam(self.optimizer):
            return offload_states(self, *args, **kwargs)

    DeepSpeedZeroOptimizer_Stage3.offload_states = offload_torch_adam_states
    DeepSpeedEngine._apmpo_sleep_contract = True
