"""Rig-file section owned by models: the per-neuron models and how they train."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Strict):
    kind: Literal["baseline", "compact"] = "baseline"
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?|auto)$")
    seed: int = Field(0, ge=0)
    ensemble_size: int = Field(4, ge=1, le=64)
    # Baseline (ridge regression on fixed features).
    ridge_alpha: float = Field(10.0, gt=0.0, le=1e8)
    # Compact CNN sizes.
    filters_per_layer: int = Field(8, ge=1, le=512)
    n_layers: int = Field(5, ge=1, le=8)
    strides: list[int] = Field(default_factory=lambda: [1, 2, 2, 1, 1])
    kernel_size: int = Field(5, ge=1, le=11)
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0)
    batch_size: int = Field(64, ge=1, le=4096)
    # On a virtual clock the budget between trials is counted in steps, not seconds.
    steps_per_trial: int = Field(20, ge=0, le=100000)
    max_stored_responses: int = Field(200000, ge=100, le=10_000_000)
    form: Literal["auto", "stacked", "loop"] = "auto"
