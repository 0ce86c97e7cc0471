"""Options of the OpenRLHF (Ray cluster) backend: the ``openrlhf:`` section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OpenRLHFSection(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    num_nodes: int = Field(1, ge=1, description="actor/ref nodes")
    num_gpus_per_node: int = Field(4, ge=1, description="GPUs per node")
    extra_args: list[str] = Field(
        default_factory=list, description="raw OpenRLHF flags appended last (validated by OpenRLHF's parser)"
    )
