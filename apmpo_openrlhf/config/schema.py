"""The training configuration: one schema for both backends (pydantic, unknown keys rejected).

A YAML file (with ``extends:``) plus ``--set key=value`` overrides is validated into
:class:`TrainConfig`. Backend-specific options live in their own sections (``local:`` and
``openrlhf:``), defined next to this file.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..algorithms.adaptive import validate_adaptive_options
from ..algorithms.registry import LOSS_SPECIFIC_KEYS, POLICY_LOSSES, get_policy_loss, readers_of
from ..algorithms.rollout_correction import correction_band
from .local import LocalSection
from .openrlhf import OpenRLHFSection


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AdaptiveSection(Section):
    """PMPO exponent and FAC clip bound (SPEC.md 3): the ``apmpo`` loss trains with them; every run logs
    them as ``adaptive/*`` for comparison."""

    scope: Literal["batch", "group"] = Field("batch", description="statistics over the rollout batch or per prompt group")
    gamma: float = Field(0.8, ge=0, description="sensitivity of p to the mean reward (Eq. 4)")
    p_schedule: Literal["exp", "linear", "fixed"] = Field("exp", description="exp (Eq. 4), linear (Eq. 11) or fixed")
    p_fixed: float = Field(1.0, gt=0, le=1, description="p for p_schedule=fixed (1 turns PMPO off)")
    p_min: float = Field(0.05, gt=0, le=1, description="lower clamp of the linear schedule")
    fss: Literal["full", "mu", "inv_sigma"] = Field("full", description="Feedback Stability Score variant (Table 7)")
    eps_schedule: Literal["tanh", "linear", "fixed"] = Field("tanh", description="tanh (Eq. 6), linear (Alg. 1) or fixed")
    eps_min: float = Field(0.2, ge=0, description="lower end of the adaptive upper clip bound")
    eps_max: float = Field(0.4, ge=0, description="upper end of the adaptive upper clip bound")
    eps_fixed: float = Field(0.2, ge=0, description="eps_high for eps_schedule=fixed (0.2 turns FAC off)")
    delta: float = Field(1e-6, gt=0, description="stability constant of Eq. 5")

    @model_validator(mode="after")
    def _consistent(self) -> "AdaptiveSection":
        validate_adaptive_options(**self.model_dump())
        return self


def _changed_keys(value, default, key: str) -> list[str]:
    """``key = value`` for each (sub-)key whose value differs from the default."""
    if isinstance(value, BaseModel):
        return [f"{key}.{k} = {v!r}" for k, v in value.model_dump().items() if v != getattr(default, k)]
    return [] if value == default else [f"{key} = {value!r}"]


class RolloutCorrectionSection(Section):
    """Rollout/trainer mismatch: OpenRLHF 0.11.2's ``--algo.advantage.is_correction_*`` options, applied
    to every loss of the registry (docs/algorithms.md, "Rollout/trainer mismatch")."""

    level: Literal["off", "token", "seq"] = Field(
        "off", description="off, token (each token's statistic is gated) or seq (the sequence mean: a rejection "
        "filter, mask only)"
    )
    mode: Literal["mask", "clip"] = Field(
        "mask", description="mask drops out-of-band units (ICEPOP; survivors keep their weight pi_old/pi_rollout); "
        "clip clamps each token's weight into the band (truncated IS, TIS; level token, gating ratio)"
    )
    gating: Literal["ratio", "binary_kl", "tv"] = Field(
        "ratio", description="statistic the gate reads: the weight pi_old/pi_rollout, or the sampled token's "
        "binary KL / total variation between the two policies (an upper bound only)"
    )
    threshold: list[float] = Field(
        [0.5, 5.0], min_length=1, max_length=2,
        description="[low, high] band of the gated statistic, or [high] for an upper bound only",
    )
    measure: bool = Field(
        True, description="log the mismatch every step (vllm_kl, mismatch/*); on the openrlhf backend this keeps "
        "vLLM's log-probs of the sampled tokens (see docs/openrlhf.md); needed when level is not off"
    )

    @field_validator("level", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        return "off" if value is False else value  # YAML 1.1 reads a bare `off` as false

    @model_validator(mode="after")
    def _consistent(self) -> "RolloutCorrectionSection":
        correction_band(self.level, self.mode, self.gating, self.threshold)
        if self.level == "off":
            defaults = RolloutCorrectionSection.model_construct()
            unused = [f"{k} = {getattr(self, k)!r}" for k in ("mode", "gating", "threshold")
                      if getattr(self, k) != getattr(defaults, k)]
            if unused:
                raise ValueError(f"{', '.join(unused)} has no effect while level is 'off' (set level: token or seq)")
        if self.level != "off" and not self.measure:
            raise ValueError("measure=false with level != 'off': the correction needs the rollout log-probs")
        return self


class AlgorithmSection(Section):
    loss: Literal[tuple(POLICY_LOSSES)] = Field(
        "apmpo", description="policy loss from the registry (apmpo_openrlhf/algorithms/registry.py)"
    )
    advantage_std: Literal["population", "unbiased"] = Field("population", description="std of Eq. 2")
    advantage_delta: float = Field(1e-6, gt=0, description="delta of Eq. 2")
    adaptive: AdaptiveSection = Field(default_factory=AdaptiveSection)
    clip: Literal["asymmetric", "symmetric"] = Field("asymmetric", description="APMPO clip (Eq. 7 / Eq. 81)")
    eps_low: float = Field(0.2, ge=0, lt=1, description="lower clip bound 1 - eps_low (grpo, dapo, drgrpo, apmpo)")
    eps_high: float | None = Field(
        None, ge=0, description="upper clip bound of grpo / dapo / drgrpo (null: 0.2 / 0.28 / 0.2); apmpo takes it "
        "from `adaptive`"
    )
    gmpo_clip: float = Field(0.4, gt=0, description="GMPO's log-space clip c")
    gspo_eps_low: float = Field(3e-4, ge=0, lt=1, description="GSPO: lower bound 1 - eps of the sequence ratio (paper: 3e-4)")
    gspo_eps_high: float = Field(4e-4, ge=0, description="GSPO: upper bound 1 + eps of the sequence ratio (paper: 4e-4)")
    cispo_eps_high: float = Field(
        0.28, ge=0, description="CISPO: the importance weight is clipped at 1 + eps (the paper tunes it and gives no "
        "value; 0.28 is DAPO's clip-higher)"
    )
    cispo_eps_low: float | None = Field(
        None, ge=0, lt=1, description="CISPO: lower bound 1 - eps of the importance weight (null: none, as the paper)"
    )
    drgrpo_token_budget: int | None = Field(
        None, ge=1, description="Dr. GRPO: the constant token normaliser L of sum_t / L (null: rollout.max_new_tokens, "
        "the generation budget)"
    )
    kl_beta: float = Field(0.001, ge=0, description="KL loss coefficient (0 disables the reference model)")
    kl_estimator: Literal["k1", "k2", "k3"] = Field("k3", description="KL estimator")
    dynamic_filtering: bool = Field(False, description="drop groups whose rewards are all equal (DAPO)")
    adaptive_statistics: Literal["sampled", "kept"] = Field(
        "sampled",
        description="with dynamic_filtering: the rewards whose mean and std are mu_R / sigma_R (hence p, eps_high; "
        "adaptive.scope batch): every group sampled for the step (SPEC.md 3: the policy's success rate) or only "
        "the groups kept for training",
    )
    overlong_buffer_len: int | None = Field(
        None, ge=1, description="DAPO overlong shaping: penalty ramp length in tokens (None = off)"
    )
    overlong_penalty_factor: float = Field(1.0, ge=0, description="DAPO overlong shaping: maximum penalty")
    rollout_correction: RolloutCorrectionSection = Field(default_factory=RolloutCorrectionSection)

    @model_validator(mode="after")
    def _loss_specific_keys(self) -> "AlgorithmSection":
        """A loss-specific key (one that some registry entry reads) that the chosen loss does not read
        is refused when set to anything but its default: it would be accepted and have no effect."""
        entry = get_policy_loss(self.loss)
        problems = []
        for key in LOSS_SPECIFIC_KEYS:
            if key in entry.reads:
                continue
            changed = _changed_keys(getattr(self, key), type(self).model_fields[key].get_default(
                call_default_factory=True), f"algorithm.{key}")
            if not changed:
                continue
            line = (f"{', '.join(changed)} has no effect with loss {self.loss!r} (algorithm.{key} is read by "
                    f"{', '.join(readers_of(key))})")
            hint = entry.hints.get(key)
            problems.append(f"{line}; {hint}" if hint else f"{line}; remove it or choose one of those losses")
        if problems:
            raise ValueError("\n  ".join(problems))
        return self


class ModelSection(Section):
    path: str | None = Field(
        None,
        description="Hugging Face model directory; null = build the tiny local model (local.tiny_model) into "
        "<output_dir>/base_model (openrlhf with openrlhf.max_images_per_prompt > 0: a tiny Qwen2.5-VL)",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "bfloat16", description="parameter dtype (openrlhf: float32 only on the CPU backend, a machine without GPU)"
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "flash_attention_2", description="attention kernel; flash_attention_2 needs a GPU (use sdpa or eager on CPU)"
    )
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass (less memory)")


class RolloutSection(Section):
    prompts_per_step: int = Field(512, ge=1, description="prompts per rollout batch (B)")
    n_samples_per_prompt: int = Field(8, ge=1, description="responses per prompt (G)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling")
    max_new_tokens: int = Field(3072, ge=1, description="maximum response length")
    min_new_tokens: int = Field(
        1, ge=0, description="the end-of-sequence token cannot be sampled before this many new tokens (vLLM's "
        "min_tokens; OpenRLHF's default 1: no empty response), on both backends, in training and evaluation"
    )
    max_prompt_len: int = Field(1024, ge=1, description="prompts are truncated to this many tokens")


class TrainSection(Section):
    train_batch_size: int = Field(
        1024, ge=1, description="samples per optimizer step; prompts_per_step*n/train_batch_size steps per rollout"
    )
    micro_batch_size: int = Field(4, ge=1, description="samples per forward/backward (gradient accumulation)")
    lr: float = Field(1e-6, gt=0, description="AdamW peak learning rate")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="after warm-up: constant (the paper's setting) or cosine decay to min_lr_ratio * lr at the last "
        "optimizer step (OpenRLHF's cosine_with_min_lr)",
    )
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine schedule: final learning rate as a fraction of lr")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    adam_betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW (beta1, beta2), each in [0, 1)")
    grad_clip: float = Field(1.0, gt=0, description="global gradient-norm clip")
    warmup_steps: int = Field(0, ge=0, description="linear LR warm-up, in optimizer steps")

    @model_validator(mode="after")
    def _betas(self) -> "TrainSection":
        for b in self.adam_betas:
            if not 0 <= b < 1:
                raise ValueError(f"adam_betas={self.adam_betas}: each beta must lie in [0, 1)")
        return self


class DataSection(Section):
    train_path: str | None = Field(
        None,
        description="prompt dataset (jsonl from `python -m apmpo_openrlhf.data`); null = the synthetic task "
        "(local.task; openrlhf: written to <output_dir>/prompts/, or with reward.task choice / sql Geometry3K / "
        "Spider dev questions from the data directory)",
    )
    eval_path: str | None = Field(None, description="optional evaluation prompt dataset")
    input_key: str = Field("prompt", description="field holding the chat-formatted prompt")
    label_key: str = Field("label", description="field holding the JSON label given to the reward")
    image_key: str | None = Field(None, description="field holding images (vision-language models)")
    apply_chat_template: bool = Field(True, description="render chat-message prompts with the model's chat template")


class RewardSection(Section):
    task: str = Field("math", description="reward registered under this name (math, sql, choice, arithmetic, arithmetic_exact)")
    timeout_s: float = Field(
        10.0, gt=0, description="per-answer grading time limit on both backends (math-verify for math and choice "
        "values, query execution for sql; arithmetic needs none): a timeout scores 0 and is counted in "
        "reward/timeouts (metrics.jsonl and eval.jsonl on the local backend), never as a wrong answer"
    )
    num_workers: int = Field(
        2, ge=1, description="grading workers (local: threads; openrlhf: math-verify processes per vLLM engine)"
    )


class WandbSection(Section):
    project: str = Field("apmpo", description="W&B project")
    entity: str | None = Field(None, description="W&B entity (team or user)")
    run_name: str | None = Field(None, description="W&B run name (null = the config's name)")
    mode: Literal["online", "offline", "disabled"] = Field("online", description="offline writes locally for `wandb sync`")


class LoggingSection(Section):
    tensorboard: bool = Field(True, description="write TensorBoard events under <output_dir>/tensorboard")
    wandb: WandbSection | None = Field(None, description="W&B settings; null disables W&B")
    log_every: int = Field(1, ge=1, description="log every N steps")


class CheckpointSection(Section):
    save_steps: int = Field(50, ge=1, description="save a checkpoint every N rollout steps")
    max_keep: int = Field(3, ge=1, description="checkpoints kept")
    resume: bool = Field(True, description="continue from the latest checkpoint in output_dir if there is one")
    save_hf: bool = Field(
        True,
        description="Hugging Face model copies; the two backends differ: local = write <output_dir>/final_model at "
        "the end (its checkpoints are torch state dicts); openrlhf = also a copy of the actor at every checkpoint "
        "(<ckpt_path>/global_step<N>_hf, ~2 bytes x parameters each, never rotated: "
        "evaluation/scripts/eval_checkpoints.sh evaluates them for training curves), while final_model is "
        "always written",
    )


class EvalSection(Section):
    at_step0: bool = Field(False, description="evaluate before the first training step")
    every_steps: int | None = Field(
        None, ge=1,
        description="evaluate every N steps (None = never); the local backend also evaluates at the last step when "
        "eval is on and max_steps is not a multiple of N, so a run always ends with an eval figure",
    )
    n_samples_per_prompt: int = Field(4, ge=1, description="samples per evaluation prompt")
    temperature: float = Field(0.6, gt=0, description="evaluation sampling temperature (SPEC.md 6)")
    top_p: float = Field(0.95, gt=0, le=1, description="evaluation nucleus sampling")


class TrainConfig(Section):
    """Root of a training config. See configs/ for examples and the README for every key."""

    backend: Literal["local", "openrlhf"] = Field("local", description="local (embedded, one process) or openrlhf (Ray cluster)")
    name: str = Field("run", description="run name used in logs")
    seed: int = Field(0, description="random seed")
    output_dir: str = Field("outputs/run", description="where metrics, checkpoints and the final model go")
    max_steps: int = Field(400, ge=1, description="rollout/training steps (the paper trains 400)")
    model: ModelSection = Field(default_factory=ModelSection)
    algorithm: AlgorithmSection = Field(default_factory=AlgorithmSection)
    rollout: RolloutSection = Field(default_factory=RolloutSection)
    train: TrainSection = Field(default_factory=TrainSection)
    data: DataSection = Field(default_factory=DataSection)
    reward: RewardSection = Field(default_factory=RewardSection)
    logging: LoggingSection = Field(default_factory=LoggingSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    local: LocalSection = Field(default_factory=LocalSection)
    openrlhf: OpenRLHFSection = Field(default_factory=OpenRLHFSection)

    @model_validator(mode="after")
    def _batch_shapes(self) -> "TrainConfig":
        samples = self.rollout.prompts_per_step * self.rollout.n_samples_per_prompt
        if samples % self.train.train_batch_size != 0:
            raise ValueError(
                f"train.train_batch_size={self.train.train_batch_size} must divide the rollout samples "
                f"rollout.prompts_per_step * rollout.n_samples_per_prompt = {samples}"
            )
        if self.train.train_batch_size % self.train.micro_batch_size != 0:
            raise ValueError(
                f"train.micro_batch_size={self.train.micro_batch_size} must divide "
                f"train.train_batch_size={self.train.train_batch_size}"
            )
        return self

    @model_validator(mode="after")
    def _sample_budget(self) -> "TrainConfig":
        budget = self.local.max_generated_samples
        if budget is None:
            return self
        if self.backend != "local":
            raise ValueError(
                f"local.max_generated_samples={budget}: a budget of generated samples is honoured by the local "
                f"backend only (backend={self.backend!r}); use max_steps to bound an OpenRLHF run"
            )
        if self.train.lr_schedule != "constant":
            raise ValueError(
                f"local.max_generated_samples={budget} with train.lr_schedule={self.train.lr_schedule!r}: the decay is "
                "planned over max_steps, and a sample budget ends the run at a step not known in advance; use "
                "train.lr_schedule: constant (or no budget)"
            )
        return self

    @property
    def optimizer_steps_per_rollout(self) -> int:
        return self.rollout.prompts_per_step * self.rollout.n_samples_per_prompt // self.train.train_batch_size
