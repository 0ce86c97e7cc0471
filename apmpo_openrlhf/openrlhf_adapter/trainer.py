"""The single-controller PPO trainer (a Ray actor) with the APMPO experience maker.

OpenRLHF's ``PPOTrainer`` gains: the :class:`APMPOExperienceMaker`; ``max_steps`` (OpenRLHF stops
only when its prompt episodes run out); an optional evaluation before the first step; the
LR-scheduler length of ``max_steps`` rollout steps; the per-step adaptive statistics merged
into the metrics its W&B / TensorBoard loggers write; the raw rewards of every sampled group
(dynamic filtering drops some before the experience maker); batches trimmed to a whole number
of data-parallel units; and the loop checks of ``loop_checks.py`` (reward outcome counts,
optionally the weight-sync check).
"""

from __future__ import annotations

import ray
import torch
from openrlhf.trainer.ppo_trainer import PPOTrainer
from openrlhf.utils.logging_utils import init_logger

from .experience import APMPOExperienceMaker, data_parallel_unit
from .loop_checks import LoopChecksMixin

logger = init_logger(__name__)


def whole_units(samples: list, unit: int) -> list:
    """The first ``len(samples) // unit * unit`` samples (``unit`` is a multiple of the group size,
    and generation keeps a group's samples together, so only whole groups are dropped)."""
    keep = len(samples) // unit * unit
    if keep < len(samples):
        logger.warning(
            f"rollout batch of {len(samples)} samples: training on {keep}, a whole number of {unit}-sample units "
            "(prompt groups x data-parallel ranks x micro-batch)"
        )
    return samples[:keep]


class APMPOPPOTrainerImpl(LoopChecksMixin, PPOTrainer.__ray_actor_class__):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.spec = self.args.apmpo
        # Same constructor arguments as OpenRLHF's (BasePPOTrainer.__init__).
        self.experience_maker = APMPOExperienceMaker(
            self.actor_model_group,
            self.critic_model_group,
            self.reward_model_group,
            self.reference_model_group,
            self.kl_ctl,
            self.strategy,
            self.tokenizer,
        )
        self.completed_steps = 0
        openrlhf_generate = self.samples_generator.generate_samples

        def generate_until_max_steps(**generate_kwargs):
            # An empty, exhausted batch makes OpenRLHF's fit loop end the episode (and the run).
            if self.completed_steps >= self.spec["max_steps"]:
                return [], None, 0, True
            return openrlhf_generate(**generate_kwargs)

        self.samples_generator.generate_samples = generate_until_max_steps
        self._record_sampled_rewards()
        self._trim_to_data_parallel_units()
        self._init_loop_checks()

    def _record_sampled_rewards(self) -> None:
        """Give the experience maker the raw rewards of every group sampled for a training batch.

        With dynamic filtering OpenRLHF's SamplesGenerator drops a group whose mean score is not
        inside the range (and samples a new prompt) before the experience maker sees the batch;
        every response has passed through ``_process_response_into_experience`` by then, so its
        reward is recorded there, during ``generate_samples`` only (not evaluation). A group's G
        responses are processed together: consecutive G rewards form one group.
        """
        generator = self.samples_generator
        process, generate = generator._process_response_into_experience, generator.generate_samples
        group_size = self.spec["group_size"]
        recording: list[torch.Tensor] | None = None

        def process_and_record(response, **kwargs):
            experience = process(response, **kwargs)
            if recording is not None and experience.rewards is not None:
                recording.append(experience.rewards.reshape(-1).float())
            return experience

        def generate_and_record(**kwargs):
            nonlocal recording
            recording = []
            try:
                out = generate(**kwargs)
            finally:
                rewards, recording = (torch.cat(recording) if recording else None), None
            if rewards is not None and rewards.numel() % group_size:
                rewards = None  # a response without a reward: fall back to the batch itself
            self.experience_maker.sampled_rewards = rewards
            return out

        generator._process_response_into_experience = process_and_record
        generator.generate_samples = generate_and_record

    def _trim_to_data_parallel_units(self) -> None:
        """Drop the groups beyond a whole number of DP units (:func:`data_parallel_unit`) from a batch.

        Only a short batch (the last prompts of an episode, or dynamic filtering running out of
        prompts) loses anything: at most unit / G - 1 groups (G = 8, 4 ranks, micro-batch 4: unit
        16, so 331 prompts train on 330 and 332 on all). What is left gives every rank the same
        number of whole training micro-batches, so no rank waits in a ZeRO-3 collective the others
        never reach, and the actor's DataLoader (``drop_last``) drops nothing silently. A full batch
        (a multiple of train.batch_size) is never trimmed.
        """
        generate = self.samples_generator.generate_samples
        unit = data_parallel_unit(self.args, self.spec["group_size"])

        def generate_whole_units(**kwargs):
            samples, pass_rate, consumed, exhausted = generate(**kwargs)
            if not self.args.train.dynamic_batch_enable:
                samples = whole_units(samples, unit)
            return samples, pass_rate, consumed, exhausted

        self.samples_generator.generate_samples = generate_whole_units

    def get_max_steps(self) -> int:
        """Optimizer steps of the whole run: sizes the actor's LR scheduler."""
        return self.spec["max_steps"] * self.spec["optimizer_steps_per_rollout"] * self.args.train.max_epochs

    def init_checkpoint_states(self):
        states = super().init_checkpoint_states()
        self.completed_steps = states["global_step"]  # resumed runs count from their checkpoint
        return states

    def train_step(self, rollout_samples, global_step: int):
        status, global_step = super().train_step(rollout_samples, global_step)
        status.update(self.experience_maker.last_stats)
        status.update(self._loop_checks_after_step(global_step))
        self.completed_steps = global_step
        return status, global_step

    def fit(self, global_step: int = 0) -> None:
        fresh_start = super().init_checkpoint_states()["global_step"] == 0
        self._loop_checks_before_fit(fresh_start)
        if self.spec["eval_at_step0"] and self.eval_dataloader is not None:
            if fresh_start:  # not when resuming
                eval_kwargs = dict(self.generate_kwargs)
                eval_kwargs["temperature"] = self.args.eval.temperature
                eval_kwargs["n_samples_per_prompt"] = self.args.eval.n_samples_per_prompt
                self.evaluate(0, **eval_kwargs)
        return super().fit(global_step)


APMPOPPOTrainer = ray.remote(APMPOPPOTrainerImpl)
