"""Rig-file section owned by image selection: the mix of image kinds per block."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SelectionConfig(Strict):
    # Share of each kind of image per block; normalised to sum to one.
    mix: dict[str, float] = Field(default_factory=lambda: {"random": 1.0})
    seed: int = Field(0, ge=0)
