"""Rig-file sections owned by acquisition: the virtual cortex and the recording system.

Every number is bounded and carries its unit in its name. Unknown keys are refused.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PopulationConfig(Strict):
    """Which ground-truth neurons the virtual cortex holds."""

    n_neurons: int = Field(20, ge=1, le=2000)
    seed: int = Field(0, ge=0)
    # Share of each neuron type; normalised to sum to one. Keys are type names.
    type_shares: dict[str, float] = Field(default_factory=lambda: {"oriented": 1.0})
    baseline_hz: tuple[float, float] = (2.0, 10.0)
    peak_hz: tuple[float, float] = (20.0, 100.0)
    rf_size_frac: tuple[float, float] = Field((0.25, 0.5), description="RF diameter as a fraction of the image side")
    normalization_strength: float = Field(0.5, ge=0.0, le=10.0)
    # Custom ground truth: "package.module:function", a function from an image batch
    # (B, H, W, C float32 in [0, 1]) to rates (B, n) in spikes/s.
    custom: list[str] = Field(default_factory=list)


class SpikingConfig(Strict):
    """From rate to spikes."""

    latency_ms: tuple[float, float] = (50.0, 80.0)
    response_duration_ms: float = Field(150.0, ge=10.0, le=2000.0)
    fano_factor: float = Field(1.2, ge=1.0, le=5.0)
    refractory_ms: float = Field(1.5, ge=0.0, le=10.0)


class RecordingConfig(Strict):
    """The simulated recording system: its clock and its faults."""

    clock_offset_s: float = Field(12.5, ge=-1e6, le=1e6)
    clock_drift_ppm: float = Field(20.0, ge=-1000.0, le=1000.0)
    batch_ms: float = Field(20.0, ge=1.0, le=1000.0)
    packet_loss: float = Field(0.0, ge=0.0, le=0.5)
    heartbeat_ms: float = Field(100.0, ge=10.0, le=10000.0)


class CortexConfig(Strict):
    population: PopulationConfig = PopulationConfig()
    spiking: SpikingConfig = SpikingConfig()
    recording: RecordingConfig = RecordingConfig()
    source: Literal["virtual", "native", "openephys", "replay"] = "virtual"
