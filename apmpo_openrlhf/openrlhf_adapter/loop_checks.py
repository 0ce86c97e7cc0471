"""Per-step checks of the PPO-Ray loop's joints, logged with the step's metrics.

- :class:`WeightSyncCheck` (``openrlhf.check_weight_sync``): after every weight broadcast, each
  vLLM engine's log-probabilities of one fixed token sequence (``prompt_logprobs``) against the
  actor's (its DeepSpeed forward), and against the engine's own values before training. The
  engine generates the next rollout, so a broken sync (a parameter not sent, a name mapped wrongly,
  a dtype cast) shows as a difference instead of silently training off-policy.
  ``weight_sync/max_abs_logprob_diff`` (engine vs actor: ~1e-6 in float32; the largest over the
  engines, and per engine ``weight_sync/max_abs_logprob_diff/engine_<i>``) and
  ``weight_sync/max_abs_logprob_change`` (engine now vs before the first step: > 0 once trained).
  With vLLM sleep mode (``colocate_all``) the engines sleep at both places the check runs: it wakes
  what the probe needs and puts back the state OpenRLHF left (:meth:`WeightSyncCheck.engines_awake`).
- :class:`RewardOutcomes`: how the reward function graded every response of the step, including
  those of groups that dynamic filtering dropped, from the ``extra_logs`` of
  ``rewards/openrlhf_reward.py``: ``reward/graded``, ``reward/timeouts`` (the grader hit its time
  limit: scored 0 but counted here, not as a wrong answer), ``reward/errors``, ``reward/no_answer``
  and ``reward/missing`` (reward_func raised: OpenRLHF swallows it, utils/agent.py:303-304).

:class:`LoopChecksMixin` wires both into the trainer (trainer.py).
"""

from __future__ import annotations

import contextlib

import ray
import torch
from openrlhf.utils.logging_utils import init_logger

# extra_logs key of rewards/openrlhf_reward.py -> metric name (the local trainer counts the same)
from ..rewards.outcomes import OUTCOME_KEYS

logger = init_logger(__name__)

# A fixed text whose tokens every tokenizer has (the tiny model's is character-level), cut to the
# engine's context length.
PROBE_TEXT = "12+30=42, so the answer is \\boxed{42}."
# vLLM's sleep-mode tags, in the order OpenRLHF wakes them (trainer/ray/vllm_engine.py:146-151).
ENGINE_TAGS = ("weights", "kv_cache")
# What of a sleeping engine is awake where the check runs (OpenRLHF 0.11.2, vllm.enable_sleep):
# before the first step nothing (create_vllm_engines puts every engine to sleep, vllm_engine.py:308-309,
# and nothing woke them since); after a step's broadcast the weights only (broadcast_to_vllm wakes
# ["weights"] and leaves the KV cache asleep until the next generate_samples, ppo_trainer.py:301-318).
AWAKE_BEFORE_FIT: tuple[str, ...] = ()
AWAKE_AFTER_BROADCAST: tuple[str, ...] = ("weights",)


class WeightSyncCheck:
    def __init__(self, tokenizer, temperature: float, max_len: int, text: str = PROBE_TEXT,
                 engines_sleep: bool = False):
        # one position left for the token vLLM must generate
        self.token_ids = tokenizer(text, add_special_tokens=False)["input_ids"][: max_len - 1]
        if len(self.token_ids) < 2:
            raise ValueError(f"the weight-sync probe text {text!r} has fewer than 2 tokens")
        # vLLM's prompt log-probs are of the raw logits; OpenRLHF's actor divides by the rollout
        # temperature, so the two are comparable at temperature 1 only.
        self.comparable = temperature == 1.0
        self.before_training: torch.Tensor | None = None
        self.engines_sleep = engines_sleep  # args.vllm.enable_sleep (OpenRLHF turns it off without colocate_all)

    @contextlib.contextmanager
    def engines_awake(self, engines, awake: tuple[str, ...]):
        """Everything of every engine awake inside; afterwards the state they had, given the tags
        that were ``awake``: all asleep again (sleep level 1, as OpenRLHF puts them to sleep; vLLM
        sleeps only a fully awake engine), then those tags woken. Engines that report their sleep
        state (the CPU backend's, sleep_contract.py) are checked against ``awake`` before and after,
        so a change in OpenRLHF's call order fails there instead of probing a sleeping engine."""
        if not self.engines_sleep:
            yield
            return
        from openrlhf.trainer.ray.vllm_engine import batch_vllm_engine_call  # imports vLLM

        self._expect_awake(engines, awake, "before the weight-sync check")
        batch_vllm_engine_call(engines, "wake_up", tags=[t for t in ENGINE_TAGS if t not in awake])
        try:
            yield
        finally:
            batch_vllm_engine_call(engines, "sleep")
            if awake:
                batch_vllm_engine_call(engines, "wake_up", tags=list(awake))
        self._expect_awake(engines, awake, "after the weight-sync check")

    @staticmethod
    def _expect_awake(engines, awake: tuple[str, ...], when: str) -> None:
        reporting = [engine for engine in engines if hasattr(engine, "sleep_state")]
        for state in ray.get([engine.sleep_state.remote() for engine in reporting]):
            expected = sorted(t for t in ENGINE_TAGS if t not in awake)
            if state["sleeping"] != expected:
                raise RuntimeError(f"{state['name']} {when}: asleep {state['sleeping']}, expected {expected} "
                                   "(OpenRLHF's sleep-mode call order changed? see loop_checks.AWAKE_*)")

    def engine_inputs(self) -> dict:
        """Extra keyword arguments of the engine's ``generate`` (images: image_weight_sync.py)."""
        return {}

    def actor_inputs(self) -> dict:
        """Extra keyword arguments of the actor's ``forward`` (images: image_weight_sync.py)."""
        return {}

    def engine_log_probs(self, engine) -> torch.Tensor:
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        output = ray.get(engine.generate.remote(self.token_ids, params, **self.engine_inputs()))
        # prompt_logprobs[t] is {token_id: Logprob} of token t given tokens < t; entry 0 is None.
        return torch.tensor(
            [step[token].logprob for step, token in zip(output.prompt_logprobs[1:], self.token_ids[1:])],
            dtype=torch.float64,
        )

    def actor_log_probs(self, actor_group) -> torch.Tensor:
        sequences = torch.tensor([self.token_ids])
        attention_mask = torch.ones_like(sequences)
        action_mask = torch.ones(1, len(self.token_ids) - 1, dtype=torch.long)
        # every rank runs the forward (ZeRO-3 gathers parameters collectively); rank 0's result
        refs = actor_group.async_run_method("forward", sequences, action_mask, attention_mask, **self.actor_inputs())
        return ray.get(refs)[0][0].to(torch.float64)

    def record_before_training(self, actor_group, engines, fresh_start: bool) -> dict[str, float]:
        """Engine values before the first step; on a fresh start (engine and actor both loaded the
        pretrained model) also their difference, which shows the comparison itself is sound."""
        with self.engines_awake(engines, AWAKE_BEFORE_FIT):
            self.before_training = self.engine_log_probs(engines[0])
        if not (fresh_start and self.comparable):
            return {}
        diff = float((self.before_training - self.actor_log_probs(actor_group)).abs().max())
        return {"weight_sync/max_abs_logprob_diff_before_training": diff}

    def measure(self, actor_group, engines) -> dict[str, float]:
        if not self.comparable:
            return {}
        with self.engines_awake(engines, AWAKE_AFTER_BROADCAST):
            engine_values = [self.engine_log_probs(engine) for engine in engines]
        actor = self.actor_log_probs(actor_group)
        diffs = [float((e - actor).abs().max()) for e in engine_values]
        metrics = {"weight_sync/max_abs_logprob_diff": max(diffs)}
        metrics.update({f"weight_sync/max_abs_logprob_diff/engine_{i}": d for i, d in enumerate(diffs)})
        if self.before_training is not None:
            metrics["weight_sync/max_abs_logprob_change"] = float((engine_values[0] - self.before_training).abs().max())
        return metrics


class RewardOutcomes:
    """Counts of :data:`OUTCOME_KEYS` over the responses added (the samples generator adds those of
    a training batch's groups, dropped ones included, and merges them here; evaluation is not counted)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.counts = {"reward/graded": 0.0, "reward/missing": 0.0, **{k: 0.0 for k in OUTCOME_KEYS.values()}}

    def add(self, response: dict) -> None:
        self.counts["reward/graded"] += 1
        if response.get("reward") is None:
            self.counts["reward/missing"] += 1
        logs = response.get("extra_logs") or {}
        for key, metric in OUTCOME_KEYS.items():
            self.counts[metric] += float(logs.get(key, 0.0))

    def merge(self, other: "RewardOutcomes") -> None:
        for key, value in other.counts.items():
            self.counts[key] += value

    def take(self) -> dict[str, float]:
        counts = dict(self.counts)
        self.reset()
        return counts


class LoopChecksMixin:
    """For the trainer actor: ``_init_loop_checks()`` in ``__init__`` (before the samples generator is
    attached: it fills :attr:`reward_outcomes`), ``_loop_checks_before_fit()`` before the fit loop,
    ``_loop_checks_after_step()`` after each step."""

    def _init_loop_checks(self) -> None:
        self.reward_outcomes = RewardOutcomes()
        self.weight_sync_check = None
        if self.spec.get("check_weight_sync") and self.vllm_engines:
            from .image_weight_sync import make_weight_sync_check  # an image prompt for a VLM's processor

            self.weight_sync_check = make_weight_sync_check(
                self.tokenizer, self.args.rollout.temperature, self.args.data.max_len,
                engines_sleep=self.args.vllm.enable_sleep,
            )
            if not self.weight_sync_check.comparable:
                logger.warning("openrlhf.check_weight_sync: skipped, rollout.temperature != 1 (vLLM's prompt "
                               "log-probs are untempered, the actor's are tempered)")

    def _loop_checks_before_fit(self, fresh_start: bool) -> None:
        self._metrics_before_fit = {}
        if self.weight_sync_check is not None:
            self._metrics_before_fit = self.weight_sync_check.record_before_training(
                self.actor_model_group, self.vllm_engines, fresh_start
            )
            logger.info("weight-sync check before training: %s", self._metrics_before_fit)

    def _loop_checks_after_step(self, global_step: int) -> dict[str, float]:
        metrics = self.reward_outcomes.take()
        metrics.update(getattr(self, "_metrics_before_fit", {}))  # with the first step's metrics
        self._metrics_before_fit = {}
        if metrics["reward/timeouts"]:
            logger.warning(
                "step %d: %d of %d responses hit the grading time limit (scored 0, counted in reward/timeouts)",
                global_step, metrics["reward/timeouts"], metrics["reward/graded"],
            )
        if self.weight_sync_check is not None:
            metrics.update(self.weight_sync_check.measure(self.actor_model_group, self.vllm_engines))
        return metrics
