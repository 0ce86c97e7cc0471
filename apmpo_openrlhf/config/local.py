"""Options of the local (embedded, single-process) backend: the ``local:`` section."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TaskSection(_Section):
    """The synthetic verifiable task used when ``data.train_path`` is null."""

    name: Literal["arithmetic"] = Field("arithmetic", description="synthetic task (prompt generator)")
    min_operand: int = Field(0, ge=0, description="smallest operand")
    max_operand: int = Field(9, ge=0, description="largest operand")
    operations: list[Literal["+", "-"]] = Field(["+"], min_length=1, description="operators drawn uniformly")
    max_answer: int = Field(9, ge=0, description="only problems whose answer lies in [0, max_answer] are drawn")
    num_operands: int = Field(2, ge=2, le=4, description="operands per problem (operators evaluated left to right)")
    heldout_fraction: float = Field(
        0.0, ge=0, lt=1, description="share of the problems held out (never trained on; the evaluation set when > 0)"
    )
    warmstart_fraction: float = Field(
        0.0, ge=0, le=1, description="share of the problems (taken from the training ones) for local.warmstart"
    )
    split_seed: int = Field(0, description="seed of the held-out / warm-start split (the same for every run seed)")

    @model_validator(mode="after")
    def _non_empty(self) -> "TaskSection":
        if self.min_operand > self.max_operand:
            raise ValueError(f"min_operand={self.min_operand} must be <= max_operand={self.max_operand}")
        return self


class TinyModelSection(_Section):
    """Sizes of the tiny Llama built when ``model.path`` is null (see apmpo_openrlhf.models.tiny)."""

    hidden_size: int = Field(64, ge=32, description="hidden size (multiple of 32: head_dim is 32)")
    num_layers: int = Field(2, ge=1, description="decoder layers of the tiny model")
    intermediate_size: int = Field(128, ge=1, description="MLP width of the tiny model")

    @field_validator("hidden_size")
    @classmethod
    def _head_dim(cls, value: int) -> int:
        if value % 32 != 0:
            raise ValueError("must be a multiple of 32 (the tiny model's head_dim is 32)")
        return value


class WarmstartSection(_Section):
    """Supervised warm start before RL (apmpo_openrlhf/local/warmstart.py): cross-entropy on the correct
    answers of the task's warm-start split until the sampled accuracy on the training problems reaches
    ``target_accuracy``. Cached in <output_dir>/warmstart/, deterministic by seed."""

    target_accuracy: float | None = Field(None, gt=0, le=1, description="stop at this sampled accuracy (None = off)")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate of the warm start")
    batch_size: int = Field(64, ge=1, description="problems per supervised step")
    check_every: int = Field(10, ge=1, description="supervised steps between accuracy checks")
    check_samples: int = Field(512, ge=1, description="samples (rollout temperature) per accuracy check")
    max_steps: int = Field(3000, ge=1, description="give up (and start RL anyway) after this many supervised steps")


class HeldoutEvalSection(_Section):
    """Pass@1..n on the task's held-out problems (apmpo_openrlhf/local/heldout_eval.py): n samples per
    problem, the unbiased estimator of evaluation.metrics.pass_at_k; rows in <output_dir>/heldout.jsonl,
    the last one also in <output_dir>/heldout.json."""

    at_end: bool = Field(False, description="evaluate once training reaches max_steps")
    every_steps: int | None = Field(None, ge=1, description="also evaluate every N steps (and at step 0)")
    n_samples: int = Field(16, ge=1, description="samples per held-out problem (Pass@k for k = 1..n)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling")


class LocalSection(_Section):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads (None = torch's default)")
    task: TaskSection = Field(default_factory=TaskSection)
    tiny_model: TinyModelSection = Field(default_factory=TinyModelSection)
    warmstart: WarmstartSection = Field(default_factory=WarmstartSection)
    heldout_eval: HeldoutEvalSection = Field(default_factory=HeldoutEvalSection)
    dynamic_sampling_max_rounds: int = Field(
        4, ge=1, description="DAPO dynamic filtering: generation rounds per step to refill dropped groups"
    )
    max_generated_samples: int | None = Field(
        None, ge=1, description="budget of generated training samples (every sampled response, dynamic sampling's "
        "extra rounds included; evaluation excluded): training stops after the step at which "
        "samples_generated_total reaches it, or at max_steps if that comes first (None = no budget; local backend "
        "only; needs train.lr_schedule constant)"
    )
    progress_bar: bool = Field(True, description="show a tqdm bar with reward, p and eps_high (both backends)")
