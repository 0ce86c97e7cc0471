"""The training configuration: one schema for both backends (pydantic, unknown keys rejected).

A YAML file (with ``extends:``) plus ``--set key=value`` overrides is validated into
:class:`TrainConfig`. Backend-specific options live in their own sections (``local:`` and
``openrlhf:``), defined next to this file.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..algorithms.adaptive import validate_adaptive_options
from .local import LocalSection
from .openrlhf import OpenRLHFSection


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AdaptiveSection(Section):
    """PMPO exponent and FAC clip bound (SPEC.md 3); only the ``apmpo`` loss uses them."""

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


class AlgorithmSection(Section):
    loss: Literal["grpo", "dapo", "gmpo", "apmpo"] = Field("apmpo", description="policy loss from the registry")
    advantage_std: Literal["population", "unbiased"] = Field("population", description="std of Eq. 2")
    advantage_delta: float = Field(1e-6, gt=0, description="delta of Eq. 2")
    adaptive: AdaptiveSection = Field(default_factory=AdaptiveSection)
    clip: Literal["asymmetric", "symmetric"] = Field("asymmetric", description="APMPO clip (Eq. 7 / Eq. 81)")
    eps_low: float = Field(0.2, ge=0, lt=1, description="lower clip bound 1 - eps_low")
    eps_high: float | None = Field(
        None, ge=0, description="upper clip bound for grpo/dapo (default 0.2 / 0.28); apmpo takes it from `adaptive`"
    )
    gmpo_clip: float = Field(0.4, gt=0, description="GMPO's log-space clip c")
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

    def effective_eps_high(self) -> float:
        """The fixed upper clip bound of grpo/dapo."""
        if self.eps_high is not None:
            return self.eps_high
        return 0.28 if self.loss == "dapo" else 0.2

    def loss_kwargs(self) -> dict:
        """Keyword arguments for ``get_policy_loss(self.loss)`` apart from tensors, p/eps_high and divisor."""
        if self.loss == "gmpo":
            return {"clip": self.gmpo_clip}
        if self.loss == "apmpo":
            return {"eps_low": self.eps_low, "clip": self.clip}
        return {"eps_low": self.eps_low, "eps_high": self.effective_eps_high()}


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
        10.0, gt=0, description="openrlhf backend: per-answer time limit of math-verify in the vLLM engines' "
        "reward_func (a timeout scores 0 and counts in reward/timeouts); the local backend grades with 5 s"
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
    save_hf: bool = Field(True, description="write a final Hugging Face model directory")


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
        if self.algorithm.loss != "apmpo" and self.algorithm.clip == "symmetric":
            raise ValueError("algorithm.clip='symmetric' applies to the apmpo loss only")
        return self

    @property
    def optimizer_steps_per_rollout(self) -> int:
        return self.rollout.prompts_per_step * self.rollout.n_samples_per_prompt // self.train.train_batch_size
