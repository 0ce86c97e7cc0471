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


class LocalSection(_Section):
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads (None = torch's default)")
    task: TaskSection = Field(default_factory=TaskSection)
    tiny_model: TinyModelSection = Field(default_factory=TinyModelSection)
    dynamic_sampling_max_rounds: int = Field(
        4, ge=1, description="DAPO dynamic filtering: generation rounds per step to refill dropped groups"
    )
    progress_bar: bool = Field(True, description="show a tqdm bar with reward, p and eps_high")
