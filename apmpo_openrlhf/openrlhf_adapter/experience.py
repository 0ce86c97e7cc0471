"""Advantages, adaptive statistics and the rollout/trainer mismatch on the controller, over the whole
rollout batch.

:class:`APMPOExperienceMaker` extends OpenRLHF's ``RemoteExperienceMaker``: the model forwards
(old and reference log-probs) are OpenRLHF's; ``compute_advantages_and_returns`` is replaced so
that every loss gets its registry entry's advantage (SPEC.md 2's group advantage, population std +
delta; Dr. GRPO's centred one) and APMPO's p / eps_high (SPEC.md 3, the core's
``adaptive_parameters``), computed once over the rollout batch, *before* OpenRLHF slices it across
data-parallel ranks. The mismatch between vLLM's log-probs of the sampled tokens and the actor's
(``Experience.rollout_log_probs`` vs ``action_log_probs``) is measured here too, once per step.

Per-sample values reach the actors through ``Experience.info`` (the only channel that survives
concat / split / replay-buffer collation): ``p``, ``eps_high`` (what the loss uses) and
``seq_advantage`` (A_i). Batch-level statistics are kept in :attr:`last_stats` for the logger.

With dynamic filtering OpenRLHF drops all-equal groups before this class sees the batch; the
trainer records the raw rewards of every sampled group (:attr:`sampled_rewards`) so that mu_R /
sigma_R can describe the policy's success rate on the step's prompts (SPEC.md 3).
"""

from __future__ import annotations

import itertools
import math

import torch
from openrlhf.trainer.ppo_utils.experience import Experience
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from openrlhf.trainer.ppo_utils.length_penalty import apply_length_penalties

from ..algorithms import adaptive_parameters, get_policy_loss, rollout_mismatch, rollout_reward_summary

# Keys this extension writes into Experience.info (read by actor.py).
INFO_P = "p"
INFO_EPS_HIGH = "eps_high"
INFO_ADVANTAGE = "seq_advantage"


def data_parallel_size(args) -> int:
    """Actor ranks that each get their own slice of the batch (OpenRLHF's "effective actors")."""
    return (
        args.actor.num_nodes * args.actor.num_gpus_per_node // args.ds.ring_attn_size // args.ds.tensor_parallel_size
    )


def data_parallel_unit(args, group_size: int) -> int:
    """Samples per step must be a multiple of this (whole prompt groups, the same number of whole
    training micro-batches on every DP rank); see :meth:`APMPOExperienceMaker.split_rollout_samples`."""
    return math.lcm(group_size, data_parallel_size(args) * args.train.micro_batch_size)


def rollout_statistics(
    raw_rewards: torch.Tensor, group_size: int, spec: dict, sampled_rewards: torch.Tensor | None = None
) -> tuple[dict, object]:
    """Adaptive parameters and per-step statistics of raw rewards in prompt order.

    ``raw_rewards``: the groups that reach the experience maker (after dynamic filtering);
    ``sampled_rewards``: every group sampled for the step (None: the same batch). mu_R / sigma_R
    come from the sampled batch unless ``algorithm.adaptive_statistics`` is ``kept``.
    """
    sampled = raw_rewards if sampled_rewards is None else sampled_rewards
    batch = sampled if spec.get("adaptive_statistics", "sampled") == "sampled" else raw_rewards
    params = adaptive_parameters(raw_rewards, group_size, **spec["adaptive"], batch_rewards=batch)
    stats = {f"adaptive/{k}": v for k, v in params.summary().items()}
    stats.update(rollout_reward_summary(sampled, raw_rewards, group_size))
    return stats, params


class APMPOExperienceMaker(RemoteExperienceMaker):
    """OpenRLHF's experience maker with SPEC.md's advantages and adaptive statistics."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.spec = self.args.apmpo
        self.loss = get_policy_loss(self.spec["loss"])  # fails early on an unknown loss name
        self.last_stats: dict[str, float] = {}
        # Raw rewards of every group sampled for the next batch, dropped ones included (set by the
        # trainer's sample-generator hook, consumed by the next compute_advantages_and_returns).
        self.sampled_rewards: torch.Tensor | None = None
        # The batch's rollout/trainer mismatch (make_experience), logged with the next statistics.
        self.mismatch_stats: dict[str, float] = {}

    @torch.no_grad()
    def make_experience(self, samples_list: list[Experience]) -> list[Experience]:
        """OpenRLHF's model forwards, then the mismatch between vLLM's and the actor's log-probs."""
        experiences = super().make_experience(samples_list)
        self.mismatch_stats = self.measure_mismatch(experiences)
        return experiences

    def split_rollout_samples(self, rollout_samples):
        """OpenRLHF's rollout micro-batches, made per DP rank so that every rank gets as many samples.

        ``RayActorGroup.async_run_method_batch`` hands each rank a contiguous chunk of ceil(K / dp)
        of the K micro-batches: for a short batch (330 prompts x 8, micro-batch 8, 4 ranks) that is
        664 / 664 / 664 / 648 samples, so the ranks would run different numbers of ZeRO-3 forwards,
        backwards and optimizer steps, whose collectives need every rank (a hang). The trainer trims
        a step's batch to a multiple of :func:`data_parallel_unit`; here each rank's equal share is
        split by OpenRLHF's own code, so every chunk has the same micro-batch count and sizes (for
        a full batch this is exactly OpenRLHF's split).
        """
        dp = data_parallel_size(self.args)
        if dp == 1 or self.args.train.dynamic_batch_enable:  # dynamic batching balances its own way
            return super().split_rollout_samples(rollout_samples)
        if len(rollout_samples) % dp:
            raise ValueError(
                f"{len(rollout_samples)} rollout samples cannot be split evenly over {dp} data-parallel ranks "
                "(the APMPO trainer trims each batch to a whole number of DP units)"
            )
        share = len(rollout_samples) // dp
        micro_batches = []
        for rank in range(dp):
            part = super().split_rollout_samples(rollout_samples[rank * share : (rank + 1) * share])
            for experience in part:  # positions in the whole batch (compute_advantages_and_returns)
                experience.index = [i + rank * share for i in experience.index]
            micro_batches.extend(part)
        return micro_batches

    @torch.no_grad()
    def compute_advantages_and_returns(self, experiences: list[Experience]) -> list[Experience]:
        args = self.strategy.args
        group_size = self.spec["group_size"]
        if group_size != args.rollout.n_samples_per_prompt:
            raise ValueError(
                f"apmpo group_size={group_size} differs from rollout.n_samples_per_prompt="
                f"{args.rollout.n_samples_per_prompt}"
            )
        for experience in experiences:
            experience.rewards = experience.rewards.to(torch.promote_types(experience.rewards.dtype, torch.float32))
        # Raw rewards drive the adaptive statistics (SPEC.md 3); length shaping modifies
        # experience.rewards in place, so copy them first.
        raw = [experience.rewards.clone() for experience in experiences]
        apply_length_penalties(experiences, args)

        # Reorder to prompt order: consecutive group_size samples form one group. `index` is set
        # by split_rollout_samples (position in the rollout batch, which keeps groups together).
        exp_len = [len(experience.index) for experience in experiences]
        indices = torch.tensor(list(itertools.chain.from_iterable(e.index for e in experiences)))
        if indices.numel() % group_size != 0 or not torch.equal(indices.sort().values, torch.arange(indices.numel())):
            raise ValueError(
                f"the rollout batch has {indices.numel()} samples with indices that are not a permutation of "
                f"whole groups of {group_size}"
            )

        def prompt_order(values: list[torch.Tensor]) -> torch.Tensor:
            flat = torch.cat(values)
            ordered = torch.empty_like(flat)
            ordered[indices] = flat
            return ordered

        raw_rewards = prompt_order(raw)
        shaped_rewards = prompt_order([e.rewards for e in experiences])
        advantages = self.loss.advantages(
            shaped_rewards, group_size, std=self.spec["advantage_std"], delta=self.spec["advantage_delta"]
        )
        sampled, self.sampled_rewards = self.sampled_rewards, None
        stats, params = rollout_statistics(raw_rewards, group_size, self.spec, sampled)
        p_used, eps_used = self.loss.used_parameters(self.spec["loss_kwargs"], params)
        stats.update(self.mismatch_stats)
        self.mismatch_stats = {}
        self.last_stats = stats

        def per_experience(values: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return values[indices].split(exp_len)

        for experience, adv, p, eps, shaped in zip(
            experiences,
            per_experience(advantages),
            per_experience(p_used),
            per_experience(eps_used),
            per_experience(shaped_rewards),
        ):
            mask = experience.action_mask.to(adv.dtype)
            # OpenRLHF keeps token-level advantages/returns; A_i is constant over the response.
            experience.advantages = adv.unsqueeze(-1) * mask
            experience.returns = experience.advantages.clone()
            experience.info[INFO_ADVANTAGE] = adv.clone()
            experience.info[INFO_P] = p.clone()
            experience.info[INFO_EPS_HIGH] = eps.clone()
            experience.info["return"] = shaped.clone()
            experience.kl = None
        return experiences

    def measure_mismatch(self, experiences: list[Experience]) -> dict[str, float]:
        """vLLM's log-probs of the sampled tokens against the actor's (pi_rollout vs pi_old) over the
        whole batch (the core's ``rollout_mismatch``). Without a correction the rollout log-probs are
        dropped afterwards: they are not shipped to the actors."""
        correction = self.spec["rollout_correction"]
        if not correction["measure"]:
            return {}
        missing = [i for i, e in enumerate(experiences) if e.rollout_log_probs is None]
        if missing:
            raise RuntimeError(
                "algorithm.rollout_correction.measure is on but OpenRLHF kept no rollout log-probs (vLLM returns "
                "them only with --algo.advantage.is_correction_level set: was the command line built by "
                "apmpo_openrlhf.openrlhf_adapter.arguments.openrlhf_argv?)"
            )
        mask = torch.cat([e.action_mask.bool().flatten() for e in experiences])
        old = torch.cat([e.action_log_probs.float().flatten() for e in experiences])
        rollout = torch.cat([e.rollout_log_probs.float().flatten() for e in experiences])
        stats = rollout_mismatch(old, rollout, mask)
        if correction["level"] == "off":
            for e in experiences:
                e.rollout_log_probs = None
        return stats
