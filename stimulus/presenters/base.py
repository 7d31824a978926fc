"""What every presenter does, whatever draws the pixels (PsychoPy window or nothing at all).

A presenter shows one trial at a time and calls back at each image onset, at the
flip, so the caller can send the onset report and the event code immediately.
Durations are whole frames. The presenter's clock is `now()`: wall-clock seconds
for a real window; for the headless presenter, whatever clock it was handed (on a
virtual clock, frames / refresh).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np


@dataclass
class ShowPlan:
    """One trial as a presenter shows it: images and durations in whole frames."""

    trial_id: int
    pixels: np.ndarray  # (n_images, H, W, C) uint8
    image_hashes: list[str]
    fixation_frames: int
    on_frames: int
    off_frames: int
    iti_frames: int


@dataclass
class TrialOutcome:
    """How a trial went, in the presenter's clock."""

    trial_id: int
    status: str  # "done" or "aborted"
    start_s: float
    end_s: float
    n_onsets: int
    dropped_frames: int = 0
    frame_intervals_s: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    reason: str = ""


# on_onset(index, flip_s, frame_number) is called at the flip that shows image `index`.
OnsetCallback = Callable[[int, float, int], None]


class FixationSource(Protocol):
    """Whether the subject holds fixation. Polled once a frame by the presenter."""

    def start_trial(self, trial_id: int, start_s: float, duration_s: float) -> None: ...

    def holding(self, now_s: float) -> bool: ...


class Presenter(Protocol):
    """A screen: open, prepare and run trials (calling back at each onset's flip), idle, close."""

    refresh_hz: float
    pacing: str  # how frames are paced: "vsync", "software", "wall clock", "virtual clock"
    measured_refresh_hz: float | None  # what the display really does, once open (None: not measured)
    last_onset_to_flip_error_s: list[float]  # per onset of the last trial: stamp in the callback vs the flip

    def open(self) -> None: ...

    def prepare(self, plan: ShowPlan) -> None:
        """Get the plan's images ready (e.g. textures on the GPU) before its trial starts."""
        ...

    def now(self) -> float: ...

    def run_trial(self, plan: ShowPlan, on_onset: OnsetCallback, fixation: FixationSource) -> TrialOutcome: ...

    def idle(self, duration_s: float) -> None:
        """Show the fixation/blank screen for about duration_s (queue empty)."""
        ...

    def close(self) -> None: ...
