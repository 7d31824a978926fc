"""Rig-file sections owned by stimulus: images, display, fixation, selection."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImagesConfig(Strict):
    size_px: int = Field(32, ge=8, le=512)
    colour: bool = True
    pool_size: int = Field(2000, ge=10, le=1_000_000)
    test_size: int = Field(200, ge=10, le=100_000)
    gaudy_share: float = Field(0.2, ge=0.0, le=1.0)
    seed: int = Field(0, ge=0)


class DisplayConfig(Strict):
    presenter: Literal["auto", "psychopy", "headless"] = "auto"
    resolution_px: tuple[int, int] = (1024, 768)
    refresh_hz: float = Field(60.0, ge=20.0, le=500.0)
    screen_width_cm: float = Field(40.0, gt=1.0, le=1000.0)
    viewing_distance_cm: float = Field(57.0, gt=1.0, le=1000.0)
    # PsychoPy rgb space: -1 black, 0 mid grey, 1 white.
    background_rgb: tuple[float, float, float] = (0.0, 0.0, 0.0)
    gamma: float = Field(1.0, gt=0.1, le=5.0)
    fullscreen: bool = False
    image_size_deg: float = Field(4.0, gt=0.0, le=90.0)
    image_pos_deg: tuple[float, float] = (0.0, 0.0)
    fixation_size_deg: float = Field(0.2, gt=0.0, le=5.0)
    photodiode_size_px: int = Field(40, ge=4, le=400)
    photodiode_corner: Literal["bottom_right", "bottom_left", "top_right", "top_left"] = "bottom_right"


class FixationConfig(Strict):
    source: Literal["simulated", "none", "eyetracker"] = "simulated"
    break_probability: float = Field(0.0, ge=0.0, le=1.0)
    seed: int = Field(0, ge=0)
