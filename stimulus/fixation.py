"""Fixation sources: simulated (with configurable breaks) and the interface a real eye tracker fills.

The presenter polls `holding(now_s)` once a frame (presenter clock) while the
trial needs fixation, and aborts the trial at the first frame where it is False.

A lab connects its eye tracker by writing one small class with a `latest()`
method that returns the newest gaze sample in degrees of visual angle (see
GazeTracker), naming it in the rig file (fixation.tracker_class), and letting
EyeTrackerFixation compare samples with the fixation window.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from stimulus.config import DisplayConfig, FixationConfig
from stimulus.presenters.base import FixationSource


class AlwaysFixating:
    """No eye tracking: every trial is held (e.g. anaesthetised preparations)."""

    def start_trial(self, trial_id: int, start_s: float, duration_s: float) -> None:
        pass

    def holding(self, now_s: float) -> bool:
        return True


class SimulatedFixation:
    """Breaks fixation in a trial with probability `break_probability`, at a uniform time within it."""

    def __init__(self, break_probability: float, seed: int = 0):
        self.p = float(break_probability)
        self.rng = np.random.default_rng(seed)
        self.break_at = float("inf")

    def start_trial(self, trial_id: int, start_s: float, duration_s: float) -> None:
        if self.rng.random() < self.p:
            self.break_at = start_s + self.rng.uniform(0.0, duration_s)
        else:
            self.break_at = float("inf")

    def holding(self, now_s: float) -> bool:
        return now_s < self.break_at


@dataclass(frozen=True)
class GazeSample:
    """One gaze sample. Degrees of visual angle from the screen centre, x right, y up.

    t_s is in the presenter clock: the tracker adapter maps its own timestamps
    (or stamps samples when it receives them). valid=False for blinks or a lost pupil.
    """

    t_s: float
    x_deg: float
    y_deg: float
    valid: bool = True


class GazeTracker(Protocol):
    """What a lab implements for its eye tracker (EyeLink, Tobii, an analog input...).

    `latest()` must not block: return the newest sample already received, or None
    if there is none yet. Calibration to degrees is the tracker's business.
    `close()` releases the device.
    """

    def latest(self) -> GazeSample | None: ...

    def close(self) -> None: ...


class EyeTrackerFixation:
    """Fixation held while gaze stays inside a circular window around the fixation point.

    Rules, all per trial: a valid sample outside the window breaks fixation at
    once; lost gaze (invalid samples, no sample, or a sample older than
    max_sample_age_s, i.e. a stalled tracker) is tolerated for blink_grace_s and
    breaks after that. A break is final for the trial.
    """

    def __init__(
        self,
        tracker: GazeTracker,
        centre_deg: tuple[float, float],
        radius_deg: float,
        blink_grace_s: float = 0.1,
        max_sample_age_s: float = 0.05,
    ):
        self.tracker = tracker
        self.centre_deg = (float(centre_deg[0]), float(centre_deg[1]))
        self.radius_deg = float(radius_deg)
        self.blink_grace_s = float(blink_grace_s)
        self.max_sample_age_s = float(max_sample_age_s)
        self._broken = False
        self._lost_since: float | None = None
        self.break_reason = ""

    def start_trial(self, trial_id: int, start_s: float, duration_s: float) -> None:
        self._broken = False
        self._lost_since = None
        self.break_reason = ""

    def holding(self, now_s: float) -> bool:
        if self._broken:
            return False
        sample = self.tracker.latest()
        usable = sample is not None and sample.valid and now_s - sample.t_s <= self.max_sample_age_s
        if not usable:
            if self._lost_since is None:
                # A stale sample was lost from the moment it went stale, not when first noticed.
                stale_at = sample.t_s + self.max_sample_age_s if sample is not None and sample.valid else now_s
                self._lost_since = min(now_s, stale_at)
            if now_s - self._lost_since > self.blink_grace_s:
                self._broken, self.break_reason = True, "gaze lost"
            return not self._broken
        self._lost_since = None
        dx = sample.x_deg - self.centre_deg[0]
        dy = sample.y_deg - self.centre_deg[1]
        if math.hypot(dx, dy) > self.radius_deg:
            self._broken, self.break_reason = True, "gaze left the fixation window"
        return not self._broken


class SimulatedGazeTracker:
    """A GazeTracker without hardware: gaze jitters around a point and sometimes saccades away.

    Used to run the eye-tracker path of a rig (EyeTrackerFixation) on a laptop.
    `clock` is the presenter's clock (presenter.now), so samples are always fresh.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        centre_deg: tuple[float, float] = (0.0, 0.0),
        jitter_deg: float = 0.2,
        saccade_rate_hz: float = 0.0,
        saccade_deg: float = 5.0,
        seed: int = 0,
    ):
        self.clock = clock
        self.centre_deg = centre_deg
        self.jitter_deg = jitter_deg
        self.saccade_rate_hz = saccade_rate_hz
        self.saccade_deg = saccade_deg
        self.rng = np.random.default_rng(seed)
        self._last_t: float | None = None
        self._away = False

    def latest(self) -> GazeSample:
        t = self.clock()
        if self._last_t is not None and self.saccade_rate_hz > 0 and not self._away:
            # Poisson saccades: chance of one since the last sample.
            dt = max(0.0, t - self._last_t)
            self._away = self.rng.random() < 1.0 - math.exp(-self.saccade_rate_hz * dt)
        self._last_t = t
        x, y = self.centre_deg
        if self._away:
            x += self.saccade_deg
        x += self.rng.normal(0.0, self.jitter_deg)
        y += self.rng.normal(0.0, self.jitter_deg)
        return GazeSample(t, x, y, True)

    def return_to_centre(self) -> None:
        self._away = False

    def close(self) -> None:
        pass


def load_tracker(class_path: str) -> GazeTracker:
    """Construct the lab's tracker class named "package.module:ClassName" (no arguments)."""
    module_name, _, class_name = class_path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"fixation.tracker_class {class_path!r} cannot be loaded: {err}") from None
    tracker = cls()
    if not callable(getattr(tracker, "latest", None)):
        raise ValueError(f"fixation.tracker_class {class_path!r} has no latest() method (see GazeTracker)")
    return tracker


def make_fixation(cfg: FixationConfig, display: DisplayConfig, tracker: GazeTracker | None = None) -> FixationSource:
    """The fixation source the rig file asks for. `tracker` overrides tracker_class (tests, embedding)."""
    if cfg.source == "none":
        return AlwaysFixating()
    if cfg.source == "simulated":
        return SimulatedFixation(cfg.break_probability, cfg.seed)
    if tracker is None:
        tracker = load_tracker(cfg.tracker_class)
    return EyeTrackerFixation(
        tracker,
        display.fixation_pos_deg,
        cfg.window_radius_deg,
        cfg.blink_grace_ms / 1000.0,
        cfg.max_sample_age_ms / 1000.0,
    )
