"""Options of the local (embedded, single-process) backend: the ``local:`` section."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LocalSection(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available, else cpu")
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads (None = torch's default)")
