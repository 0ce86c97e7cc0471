"""The single-controller PPO trainer (a Ray actor) with the APMPO experience maker.

OpenRLHF's ``PPOTrainer`` gains: the :class:`APMPOExperienceMaker`; ``max_steps`` (OpenRLHF stops
only when its prompt episodes run out); an optional evaluation before the first step; the
LR-scheduler length of ``max_steps`` rollout steps; the per-step adaptive statistics merged
into the metrics its W&B / TensorBoard loggers write; and the loop checks of ``loop_checks.py``
(reward outcome counts, optionally the weight-sync check).
"""

from __future__ import annotations

import ray
from openrlhf.trainer.ppo_trainer import PPOTrainer

from .experience import APMPOExperienceMaker
from .loop_checks import LoopChecksMixin


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
        self._init_loop_checks()

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
