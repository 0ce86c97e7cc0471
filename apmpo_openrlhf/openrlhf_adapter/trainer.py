"""The single-controller PPO trainer (a Ray actor) with the APMPO experience maker and samples generator.

OpenRLHF's ``PPOTrainer`` gains: the :class:`APMPOExperienceMaker`; the :class:`APMPOSamplesGenerator`
(``max_steps``, the raw rewards of every sampled group for the adaptive statistics, the reward
outcome counts, batches trimmed to whole data-parallel units); an evaluation before the first step
and one after the last; the LR-scheduler length of ``max_steps`` rollout steps; the per-step
statistics merged into the metrics its W&B / TensorBoard loggers write, under the local backend's
names, also written to ``<output_dir>/metrics.jsonl`` and ``eval.jsonl`` (step_metrics.py); and the
loop checks of ``loop_checks.py`` (optionally the weight-sync check).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import ray
import torch
from openrlhf.trainer import ppo_trainer as ppo_trainer_module
from openrlhf.trainer.ppo_trainer import PPOTrainer
from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator
from openrlhf.utils.logging_utils import init_logger

from ..local.metrics import JsonlLog
from .experience import APMPOExperienceMaker, data_parallel_unit
from .loop_checks import LoopChecksMixin, RewardOutcomes
from .step_metrics import eval_row, train_row

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


def check_generation_batch(args) -> None:
    """Refuse ``--rollout.vllm_generate_batch_size`` other than the rollout batch, before anything starts.

    OpenRLHF's synchronous generator returns each generation call's samples (at most one rollout
    batch) as the step: a smaller value makes every step that many prompts instead of
    ``rollout.prompts_per_step`` (and the LR schedule, sized for full steps, never ends); a larger one
    over-samples into a buffer, which its own checks allow only with ``--train.async_enable`` (not
    supported by the extension). :class:`APMPOSamplesGenerator` would attribute buffered groups to the
    right step, but no supported configuration produces them.
    """
    requested = getattr(args.rollout, "vllm_generate_batch_size", None)
    if requested and requested != args.rollout.batch_size:
        from ..config import ConfigError

        raise ConfigError(
            f"--rollout.vllm_generate_batch_size {requested} (openrlhf.extra_args): the APMPO trainer's step is "
            f"rollout.prompts_per_step = {args.rollout.batch_size} prompts, and OpenRLHF's synchronous generator "
            "would make every step as many prompts as one generation call; remove the flag and set "
            "rollout.prompts_per_step instead"
        )


@dataclass
class GroupRecord:
    """What the samples generator saw of one prompt group's responses while generating a training batch."""

    rewards: list[float | None] = field(default_factory=list)  # raw rewards, None where reward_func failed
    outcomes: RewardOutcomes = field(default_factory=RewardOutcomes)
    grading_s: float = 0.0  # reward_func's time for these responses (inside the engines)
    first: object = None  # the group's first Experience (how its samples are recognised in a batch)
    dropped_before: list[GroupRecord] = field(default_factory=list)  # filtered groups filed with this one

    def all_records(self) -> list[GroupRecord]:
        return [*self.dropped_before, self]


class APMPOSamplesGenerator(SamplesGenerator):
    """OpenRLHF's samples generator; one training batch is made in these steps (:meth:`generate_samples`):

    1. **stop** once ``max_steps`` rollout steps are done: an empty, exhausted batch ends OpenRLHF's fit loop;
    2. **generate** with OpenRLHF's own code (dispatch to the engines, dynamic filtering, replacement
       prompts, the buffer of ``vllm_generate_batch_size``), while :meth:`_process_response_into_experience`
       files every response of a training batch into its prompt group's :class:`GroupRecord` (raw
       reward, grading outcome, grading time); evaluation responses are not filed;
    3. **attribute** the records to this batch: its groups, and the groups dynamic filtering dropped
       while they were generated (each dropped group is filed with the next kept group in completion
       order, so every sampled group counts for exactly one step, also when a generation call fills
       several steps), hand their raw rewards to the experience maker (SPEC.md 3's mu_R / sigma_R of
       every sampled group) and their counts to the loop checks (``reward/*``);
    4. **trim** the batch to a whole number of data-parallel units (:func:`whole_units`).

    Every request to the engines carries ``rollout.min_new_tokens`` (:meth:`_dispatch_prompts_to_vllm`).
    """

    def attach(self, experience_maker: APMPOExperienceMaker, reward_outcomes: RewardOutcomes) -> None:
        """The consumers of step 3 (built by the trainer after the generator)."""
        spec = self.args.apmpo
        self.experience_maker, self.reward_outcomes = experience_maker, reward_outcomes
        self.max_steps, self.group_size = spec["max_steps"], spec["group_size"]
        self.unit = data_parallel_unit(self.args, self.group_size)
        self.completed_steps = 0  # set by the trainer (resume, after each step)
        self.last_grading_s = 0.0  # reward_func time of the last batch's groups
        self.last_eval_samples: list = []
        self._filing: list[GroupRecord] | None = None  # groups completed in this call (None: not filing)
        self._open_group: GroupRecord | None = None
        self._kept: dict[int, GroupRecord] = {}  # id(first experience) -> record, for groups not yet served

    @torch.no_grad()
    def generate_samples(self, **generate_kwargs):
        # 1. stop at max_steps
        if self.completed_steps >= self.max_steps:
            return [], None, 0, True
        # 2. generate, filing every response into its group's record
        self._filing, self._open_group = [], None
        try:
            samples, pass_rate, consumed, exhausted = super().generate_samples(**generate_kwargs)
            completed = self._filing
        finally:
            self._filing = self._open_group = None
        # 3. attribute the records to this batch and hand them on
        self._file_kept_groups(completed, samples)
        records = [r for s in samples if id(s) in self._kept for r in self._kept.pop(id(s)).all_records()]
        self.experience_maker.sampled_rewards = self._batch_rewards(records)
        outcomes = RewardOutcomes()
        for record in records:
            outcomes.merge(record.outcomes)
        self.reward_outcomes.merge(outcomes)
        self.last_grading_s = sum(r.grading_s for r in records)
        # 4. trim to whole data-parallel units
        if not self.args.train.dynamic_batch_enable:
            samples = whole_units(samples, self.unit)
        return samples, pass_rate, consumed, exhausted

    def _process_response_into_experience(self, response, **generate_kwargs):
        experience = super()._process_response_into_experience(response, **generate_kwargs)
        if self._filing is not None:
            # An engine call returns one prompt's G responses, processed one after another.
            if self._open_group is None:
                self._open_group = GroupRecord(first=experience)
            group = self._open_group
            group.rewards.append(response.get("reward"))
            group.outcomes.add(response)
            group.grading_s += float((response.get("extra_logs") or {}).get("reward_time_s", 0.0))
            if len(group.rewards) == self.group_size:
                self._filing.append(group)
                self._open_group = None
        return experience

    def _file_kept_groups(self, completed: list[GroupRecord], samples: list) -> None:
        """Index the groups of this call that OpenRLHF kept (in ``samples`` or its buffer) by their
        first experience, each with the dropped groups completed since the previous kept one."""
        kept_ids = {id(s) for s in samples} | {id(s) for s in getattr(self, "_sample_buffer", None) or []}
        dropped: list[GroupRecord] = []
        last_kept = None
        for record in completed:
            if id(record.first) in kept_ids:
                record.dropped_before, dropped = dropped, []
                self._kept[id(record.first)] = last_kept = record
            else:
                dropped.append(record)
        if dropped:  # filtered groups after the last kept one (the prompts ran out): same batch
            host = last_kept or next((self._kept[id(s)] for s in reversed(samples) if id(s) in self._kept), None)
            if host is not None:
                host.dropped_before.extend(dropped)

    def _batch_rewards(self, records: list[GroupRecord]) -> torch.Tensor | None:
        """Raw rewards of the batch's sampled groups, or None (the experience maker then uses the
        kept batch) when a reward is missing: OpenRLHF fails that batch anyway (experience_maker.py)."""
        values = [r for record in records for r in record.rewards]
        if not values or any(v is None for v in values):
            return None
        return torch.tensor(values, dtype=torch.float32)

    @torch.no_grad()
    def generate_eval_samples(self, **generate_kwargs):
        self.last_eval_samples = super().generate_eval_samples(**generate_kwargs)
        return self.last_eval_samples

    def _dispatch_prompts_to_vllm(self, prompts, labels, *, images=None, **generate_kwargs):
        # OpenRLHF reads vLLM's min_tokens from generate_kwargs["min_new_tokens"] (default 1) but has no
        # flag for it; every request (training, replacement prompts, evaluation) passes through here.
        generate_kwargs["min_new_tokens"] = self.args.apmpo["min_new_tokens"]
        return super()._dispatch_prompts_to_vllm(prompts, labels, images=images, **generate_kwargs)


class APMPOPPOTrainerImpl(LoopChecksMixin, PPOTrainer.__ray_actor_class__):
    def __init__(self, *args, **kwargs):
        # OpenRLHF builds its samples generator from this module global (ppo_trainer.py); swap it for
        # the duration of the call, as the actor swaps ActorPPOTrainer (actor.py).
        original = ppo_trainer_module.SamplesGenerator
        ppo_trainer_module.SamplesGenerator = APMPOSamplesGenerator
        try:
            super().__init__(*args, **kwargs)
        finally:
            ppo_trainer_module.SamplesGenerator = original
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
        self._init_loop_checks()
        self.samples_generator.attach(self.experience_maker, self.reward_outcomes)
        self.output_dir = Path(self.spec["output_dir"]) if self.spec.get("output_dir") else None
        self.run_log: JsonlLog | None = None
        self.elapsed_s = 0.0

    @property
    def completed_steps(self) -> int:
        return self.samples_generator.completed_steps

    @completed_steps.setter
    def completed_steps(self, steps: int) -> None:
        self.samples_generator.completed_steps = steps

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
        t0 = time.time()
        status.update(self._loop_checks_after_step(global_step))
        status["timing/loop_checks"] = time.time() - t0  # part of the step (OpenRLHF sums timing/*)
        self.completed_steps = global_step
        return status, global_step

    def save_logs_and_checkpoints(self, global_step: int, logs_dict=None, client_states=None) -> None:
        """OpenRLHF's loggers and checkpoints with the step's metrics under the local backend's names,
        the same row in metrics.jsonl, then the end-of-run evaluation after the last step."""
        logs_dict = logs_dict or {}
        # reward_func ran inside the engines during generation: reported apart, not summed into the step
        row = train_row(global_step, logs_dict, self.elapsed_s, {"timing/reward_grading": self.samples_generator.last_grading_s})
        self.elapsed_s = row["elapsed_s"]
        if self.run_log is not None:
            self.run_log.write(row)
        tracked = {k: v for k, v in row.items() if k != "step"}
        tracked["generated_samples"] = logs_dict.get("generated_samples")
        super().save_logs_and_checkpoints(global_step, tracked, client_states)
        if self._final_evaluation_due(global_step):
            self.evaluate(global_step, **self._eval_generate_kwargs())

    def _eval_generate_kwargs(self) -> dict:
        eval_kwargs = dict(self.generate_kwargs)
        eval_kwargs["temperature"] = self.args.eval.temperature
        eval_kwargs["n_samples_per_prompt"] = self.args.eval.n_samples_per_prompt
        return eval_kwargs

    def _evaluation_on(self) -> bool:
        return self.eval_dataloader is not None and (
            self.spec["eval_at_step0"] or self.args.eval.steps != float("inf")
        )

    def _final_evaluation_due(self, global_step: int) -> bool:
        """The last step ends with an evaluation (as on the local backend), unless OpenRLHF's own
        ``eval.steps`` schedule evaluates it anyway."""
        on_schedule = self.args.eval.steps != float("inf") and global_step % self.args.eval.steps == 0
        return global_step == self.spec["max_steps"] and self._evaluation_on() and not on_schedule

    @torch.no_grad()
    def evaluate(self, global_step, **generate_kwargs):
        logs = super().evaluate(global_step, **generate_kwargs)
        row = eval_row(global_step, logs, self.samples_generator.last_eval_samples)
        extra = {k: v for k, v in row.items() if k != "step" and k not in logs}
        if self.wandb_logger:
            self.wandb_logger.log_eval(global_step, extra)
        if self.tensorboard_logger:
            self.tensorboard_logger.log_eval(global_step, extra)
        if self.run_log is not None:
            self.run_log.write(row, kind="eval")
        return logs

    def fit(self, global_step: int = 0) -> None:
        start_step = super().init_checkpoint_states()["global_step"]
        if self.output_dir is not None:
            self.run_log = JsonlLog(self.output_dir, start_step)
            last = self.run_log.last_row() if start_step else None
            self.elapsed_s = float(last.get("elapsed_s", 0.0)) if last else 0.0
        try:
            self._loop_checks_before_fit(start_step == 0)
            if self.spec["eval_at_step0"] and self.eval_dataloader is not None and start_step == 0:  # not when resuming
                self.evaluate(0, **self._eval_generate_kwargs())
            return super().fit(global_step)
        finally:
            if self.run_log is not None:
                self.run_log.close()
                self.run_log = None


APMPOPPOTrainer = ray.remote(APMPOPPOTrainerImpl)
