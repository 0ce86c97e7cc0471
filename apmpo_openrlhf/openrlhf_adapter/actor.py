"""The policy-loss swap inside OpenRLHF's PPO-Ray actor (runs in every actor rank's process).

- :class:`RegistryPolicyLoss` stands in for OpenRLHF's ``PolicyLoss`` (same call signature and
  5-tuple result) and evaluates a loss of the core registry with the entry's parameters
  (``args.apmpo["loss_kwargs"]``), per-sample A_i, p and eps_high from ``Experience.info``, the
  *global* sequence (or token) count of the optimizer step as divisor and, with
  ``algorithm.rollout_correction``, the importance weights pi_old / pi_rollout from OpenRLHF's
  ``rollout_log_probs`` (the core's ``rollout_correction_weights``).
- :class:`APMPOActorPPOTrainer` is OpenRLHF's ``ActorPPOTrainer`` with that loss. Its
  ``training_step`` binds the current micro-batch to the loss, makes the KL loss the core's
  (``kl_per_token`` in place of OpenRLHF's ``compute_approx_kl``, which clamps k3 at 10) and asks
  OpenRLHF's ``aggregate_loss`` for the entry's aggregation (sequence mean; token mean; token sum
  over sequences x budget), so the KL loss (k3, beta) and the entropy are aggregated like the policy term.
- :class:`APMPOPolicyModelActor` is the Ray actor class the driver hands to OpenRLHF.

Divisor: OpenRLHF gives every micro-batch of an optimizer step ``global_batch_size`` and
``batch_num_tokens`` = (sequences / tokens of the whole step over all DP ranks) / gas, and
DeepSpeed scales each backward by 1/gas and averages gradients over the dp_size ranks. With
num_sequences = global_batch_size / dp_size the summed gradient of the step is exactly that of
(1/N) sum_i J_i over all N sequences of the step (the same normalisation as OpenRLHF's
``aggregate_loss``).
"""

from __future__ import annotations

import contextlib

import ray
import torch
from openrlhf.trainer.ray import ppo_actor as ppo_actor_module
from openrlhf.trainer.ray.ppo_actor import ActorPPOTrainer, PolicyModelActor
from openrlhf.utils.loss_utils import get_loss_batch_info

from ..algorithms import get_policy_loss, kl_per_token, rollout_correction_weights
from .entropy_logging import logged_entropy_without_graph
from .experience import INFO_ADVANTAGE, INFO_EPS_HIGH, INFO_P
from .vlm_outputs import ProcessorFilesMixin


def info_tensor(experience, key: str, device, dtype=torch.float32) -> torch.Tensor:
    """A per-sample info entry as a [B] tensor (the replay buffer collates 0-d tensors into a list)."""
    if key not in experience.info:
        raise KeyError(
            f"Experience.info has no {key!r}: the experience maker of the APMPO extension did not run "
            "(is the patched PPOTrainer installed on the driver?)"
        )
    value = experience.info[key]
    if isinstance(value, list):
        value = torch.stack([torch.as_tensor(v) for v in value])
    return value.to(device=device, dtype=dtype).reshape(-1)


class RegistryPolicyLoss:
    """OpenRLHF ``PolicyLoss``-compatible callable backed by the core's loss registry."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.policy_loss = get_policy_loss(spec["loss"])
        self.loss_kwargs = dict(spec["loss_kwargs"])
        self.correction = dict(spec["rollout_correction"])
        self.experience = None

    def bind(self, experience) -> None:
        """The micro-batch whose per-sample values (A_i, p, eps_high) the next call uses."""
        self.experience = experience

    def __call__(
        self,
        log_probs: torch.Tensor,
        old_log_probs: torch.Tensor,
        advantages: torch.Tensor,
        action_mask: torch.Tensor | None = None,
        rollout_log_probs: torch.Tensor | None = None,
        dp_size: int = 1,
        batch_num_tokens: float | torch.Tensor | None = None,
        global_batch_size: float | torch.Tensor | None = None,
        token_level_loss: bool | None = None,
    ):
        experience = self.experience
        if experience is None:
            raise RuntimeError("RegistryPolicyLoss called without a bound experience (see bind())")
        if action_mask is None:
            action_mask = torch.ones_like(log_probs, dtype=torch.bool)
        device = log_probs.device
        seq_adv = info_tensor(experience, INFO_ADVANTAGE, device)
        kwargs = dict(self.loss_kwargs)
        if self.policy_loss.adaptive:
            kwargs["p"] = info_tensor(experience, INFO_P, device)
            kwargs["eps_high"] = info_tensor(experience, INFO_EPS_HIGH, device)
        # The global count of the step (OpenRLHF divides it by gas already); a budget loss's
        # batch_num_tokens is N x budget (training_step), its divisor the sequence count N.
        count = batch_num_tokens if self.policy_loss.divisor == "num_tokens" else global_batch_size
        if count is not None:
            kwargs[self.policy_loss.divisor] = torch.as_tensor(count, dtype=torch.float32) / dp_size
        if self.correction["level"] != "off":
            if rollout_log_probs is None:
                raise RuntimeError(
                    "algorithm.rollout_correction is on but the experience has no rollout_log_probs (OpenRLHF keeps "
                    "vLLM's log-probs only with --algo.advantage.is_correction_level set)"
                )
            weights, filtered = rollout_correction_weights(
                old_log_probs, rollout_log_probs.to(old_log_probs.device), action_mask, self.correction["level"],
                self.correction["mode"], self.correction["gating"], self.correction["threshold"],
            )
            kwargs["is_weights"] = weights
            # OpenRLHF's name: the fraction of tokens (sequences at level seq) clipped or masked
            experience.info["is_filter_ratio"] = filtered.detach().float()
        loss, metrics = self.policy_loss(log_probs, old_log_probs, seq_adv, action_mask, **kwargs)

        # Token-weighted 0-d metrics: OpenRLHF logs every Experience.info entry (0-d = token mean).
        experience.info["clip_frac_high"] = metrics["clip_frac_high"].detach().float()
        experience.info["clip_frac_low"] = metrics["clip_frac_low"].detach().float()
        clip_ratio = (metrics["clip_frac_high"] + metrics["clip_frac_low"]).detach()
        with torch.no_grad():
            mask = action_mask.bool()
            log_ratio = (log_probs - old_log_probs).float()
            ppo_kl = torch.where(mask, -log_ratio, torch.zeros_like(log_ratio)).sum() / mask.sum().clamp(min=1)
        # vllm_kl is measured once per step over the whole batch on the controller (experience.py)
        return loss, clip_ratio, ppo_kl, None, None


@contextlib.contextmanager
def core_kl_estimator(action_mask: torch.Tensor):
    """For one ``training_step``: OpenRLHF's KL loss uses the core's per-token estimator.

    ``ActorPPOTrainer.training_step`` computes the KL loss as ``aggregate_loss(compute_approx_kl(
    ...), action_mask, ...)`` with the ``compute_approx_kl`` of its module; that function clamps
    the estimate at +-10, so the k3 gradient vanishes wherever log pi - log pi_ref < -2.53. The
    module global is swapped for the duration of the call (one actor rank runs one call at a
    time), as ``APMPOPolicyModelActorImpl`` swaps ``ActorPPOTrainer``.
    """

    def core_estimate(log_probs, log_probs_base, log_probs_old=None, kl_estimator="k3", unbiased_gradient=False):
        return kl_per_token(log_probs, log_probs_base, action_mask.to(log_probs.device), kl_estimator)

    original = ppo_actor_module.compute_approx_kl
    ppo_actor_module.compute_approx_kl = core_estimate
    try:
        yield
    finally:
        ppo_actor_module.compute_approx_kl = original


class APMPOActorPPOTrainer(ActorPPOTrainer):
    """OpenRLHF's actor trainer with a policy loss from the core registry."""

    def __init__(self, strategy, *args, **kwargs):
        super().__init__(strategy, *args, **kwargs)
        spec = getattr(self.args, "apmpo", None)
        if spec is None:
            raise RuntimeError("args.apmpo is missing: start training through `python -m apmpo_openrlhf.train`")
        if getattr(self.args.algo.kl, "unbiased_gradient", False):
            raise ValueError(
                "algo.kl.unbiased_gradient is not supported with the APMPO extension: the KL loss is the core's "
                "kl_penalty (exact k1/k2/k3 gradients, the same as the local backend)"
            )
        self.actor_loss_fn = RegistryPolicyLoss(spec)

    def training_step(self, experience, kl_ctl: float, step: int, loss_batch_info=None):
        if loss_batch_info is None:  # dynamic-batch path: OpenRLHF derives it from the replay buffer
            loss_batch_info = get_loss_batch_info(
                self.strategy,
                experience.action_mask,
                replay_buffer=self.replay_buffer,
                step=step,
                dynamic_batch=self.args.train.dynamic_batch_enable,
            )
        else:
            self.close_window_after(step)
        # OpenRLHF passes loss_batch_info to the policy loss *and* to aggregate_loss (KL, entropy):
        # fixing the aggregation here keeps the KL term aggregated like the policy term. A budget
        # loss (Dr. GRPO) divides token sums by sequences x budget: aggregate_loss's token mode with
        # that as the token count.
        entry = self.actor_loss_fn.policy_loss
        loss_batch_info = {**loss_batch_info, "token_level_loss": entry.aggregation != "sequence"}
        budget = entry.token_normaliser(self.actor_loss_fn.loss_kwargs)
        if budget is not None:
            loss_batch_info["batch_num_tokens"] = torch.as_tensor(loss_batch_info["global_batch_size"]) * budget
        self.actor_loss_fn.bind(experience)
        try:
            with core_kl_estimator(experience.action_mask), logged_entropy_without_graph(self.args.actor.entropy_coef):
                return super().training_step(experience, kl_ctl, step, loss_batch_info)
        finally:
            self.actor_loss_fn.bind(None)


    def ppo_train(self, kl_ctl: float):
        """OpenRLHF's ``ppo_train``; its status also counts the optimizer steps taken (the local
        backend's ``optimizer_steps``), read from DeepSpeed's own step counter."""
        before = self.actor.model.global_steps
        status = super().ppo_train(kl_ctl)
        status["optimizer_steps"] = float(self.actor.model.global_steps - before)
        return status

    def close_window_after(self, step: int) -> None:
        """Make OpenRLHF's optimizer-step window of micro-batch ``step`` DeepSpeed's one, too.

        ``ppo_train`` groups the micro-batches of each rollout into windows of gas
        (``iter_grad_accum_global_norm``, restarted at every rollout), the last one shorter when the
        rollout is not a multiple of ``train.batch_size`` (the partial last prompt batch of an
        episode), and normalises each window as one step over its own samples. DeepSpeed steps when
        its own micro-step counter, which runs on across rollouts, reaches a multiple of gas: a short
        window's gradient would stay accumulated and be applied with the first micro-batches of the
        next rollout, and every later step would straddle two windows. Setting the accumulation
        boundary explicitly at the end of each window (``set_gradient_accumulation_boundary``) makes
        every window exactly one optimizer step, with its own samples' gradient (the trailing
        window's divisor already counts only its samples; DeepSpeed's 1/gas scaling is compensated
        by OpenRLHF's normaliser). The local backend takes the same shorter last step.
        """
        gas = max(int(self.strategy.accumulated_gradient), 1)
        # ppo_train's DataLoader drops an incomplete last micro-batch (drop_last=True)
        micro_batches = len(self.replay_buffer) // self.replay_buffer.sample_batch_size
        self.actor.model.set_gradient_accumulation_boundary((step + 1) % gas == 0 or step + 1 >= micro_batches)


class APMPOPolicyModelActorImpl(ProcessorFilesMixin, PolicyModelActor.__ray_actor_class__):
    """OpenRLHF's PolicyModelActor whose trainer is :class:`APMPOActorPPOTrainer`; a VLM's saved folders
    get the base model's processor files (``vlm_outputs.py``)."""

    def init_model_from_pretrained(self, strategy, pretrain, max_steps=None, vllm_engines=None):
        # OpenRLHF builds ActorPPOTrainer from its module global at the end of this method;
        # swap it for the duration of the call (this process is one actor rank).
        original = ppo_actor_module.ActorPPOTrainer
        ppo_actor_module.ActorPPOTrainer = APMPOActorPPOTrainer
        try:
            return super().init_model_from_pretrained(strategy, pretrain, max_steps, vllm_engines)
        finally:
            ppo_actor_module.ActorPPOTrainer = original


# Ray actor classes cannot be subclassed directly: subclass the wrapped class and re-decorate
# with the same resources as OpenRLHF's PolicyModelActor.
APMPOPolicyModelActor = ray.remote(num_gpus=1)(APMPOPolicyModelActorImpl)
