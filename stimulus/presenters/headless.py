"""A presenter with no window: same interface, schedule and frame accounting as the PsychoPy one.

Frames are paced by the clock it is handed: on a wall clock they come as a
screen at refresh_hz would show them, so a simulated rig runs at the speed of a
real one, and a late frame skips whole refreshes and is counted as dropped; on a
virtual clock each frame moves time on by one refresh and nothing sleeps
(`--speed max`).

What would be on screen is kept (`screen`, `photodiode_white`,
`fixation_point_on`) so tests can check the same things they check in a real
window's pixels.
"""

from __future__ import annotations

import numpy as np

from stimulus.presenters.base import FixationSource, OnsetCallback, ShowPlan, TrialOutcome
from stimulus.presenters.frames import IDLE_SLOT, FrameSlot, frames_for, trial_outcome, trial_schedule


class HeadlessPresenter:
    """The Presenter without a window (the module docstring says how frames are paced)."""

    measured_refresh_hz = None

    def __init__(self, refresh_hz: float, clock):
        """clock: now() -> seconds and sleep_until(t) (controller.clocks.WallClock or VirtualClock)."""
        self.refresh_hz = float(refresh_hz)
        self.frame_s = 1.0 / self.refresh_hz
        self.clock = clock
        self.pacing = f"{clock.name} clock"
        self._frame = 0
        self._t0 = clock.now()
        self._next_boundary = 0.0
        self.screen: np.ndarray | None = None  # image "on screen", None for none
        self.fixation_point_on = False
        # Toggles at every onset, as the PsychoPy presenter's photodiode patch does.
        self.photodiode_white = False
        # Onset stamps are the flip times themselves here, so this is always zero.
        self.last_onset_to_flip_error_s: list[float] = []

    def open(self) -> None:
        self._t0 = self.clock.now()
        self._next_boundary = self.now() + self.frame_s

    def now(self) -> float:
        return self.clock.now() - self._t0

    def prepare(self, plan: ShowPlan) -> None:
        pass  # nothing to upload

    def _flip(self) -> float:
        """Wait for the next frame boundary; return its time."""
        self._frame += 1
        target = self._next_boundary
        self.clock.sleep_until(self._t0 + target)
        now = self.now()
        # A frame more than half a refresh late counts as shown at a later
        # refresh, as with vsync; the next frame goes one refresh after that.
        missed = int(round(max(0.0, now - target) / self.frame_s))
        self._next_boundary = target + self.frame_s * (1 + missed)
        return now

    def _restart_if_behind(self) -> None:
        # After an idle wait the next boundary may be in the past: start on a fresh one.
        if self.now() > self._next_boundary:
            self._next_boundary = self.now() + self.frame_s

    def _show(self, plan: ShowPlan | None, slot: FrameSlot | None) -> None:
        self.screen = None if slot is None or slot.image < 0 else plan.pixels[slot.image]
        self.fixation_point_on = slot is not None and slot.fixation_point

    def run_trial(self, plan: ShowPlan, on_onset: OnsetCallback, fixation: FixationSource) -> TrialOutcome:
        schedule = trial_schedule(plan)
        self._restart_if_behind()
        start = self.now()
        fixation.start_trial(plan.trial_id, start, len(schedule) * self.frame_s)
        flips: list[float] = []
        onsets = 0
        self.last_onset_to_flip_error_s = []
        for slot in schedule:
            if slot.onset:
                self.photodiode_white = not self.photodiode_white
            self._show(plan, slot)
            t = self._flip()
            flips.append(t)
            if slot.onset:
                on_onset(slot.image, t, self._frame)
                self.last_onset_to_flip_error_s.append(0.0)
                onsets += 1
            if slot.needs_fixation and not fixation.holding(t):
                # Take the image off at the next frame, as the window does.
                self._show(None, IDLE_SLOT)
                flips.append(self._flip())
                return trial_outcome(plan.trial_id, "aborted", start, flips, onsets, self.frame_s, "fixation break")
        return trial_outcome(plan.trial_id, "done", start, flips, onsets, self.frame_s)

    def idle(self, duration_s: float) -> None:
        """Fixation point on a blank screen for the whole frames closest to duration_s."""
        self._show(None, IDLE_SLOT)
        self._restart_if_behind()
        for _ in range(frames_for(duration_s, self.refresh_hz)):
            self._flip()

    def close(self) -> None:
        self.screen = None
        self.fixation_point_on = False
