"""A presenter with no window: same interface and frame accounting as the PsychoPy one.

realtime=True: frames are paced by the wall clock (time.perf_counter), as a 60 Hz
screen would pace them, so a simulated rig runs at the speed of a real one.
realtime=False: frames are counted on a virtual clock and nothing sleeps
(`--speed max`).
"""
from __future__ import annotations

import time

import numpy as np

from stimulus.presenters.base import FixationSource, OnsetCallback, ShowPlan, TrialOutcome


class HeadlessPresenter:
    def __init__(self, refresh_hz: float, realtime: bool = True):
        self.refresh_hz = float(refresh_hz)
        self.frame_s = 1.0 / self.refresh_hz
        self.realtime = realtime
        self._virtual_s = 0.0
        self._frame = 0
        self._t0 = time.perf_counter()
        self.screen: np.ndarray | None = None  # last image "on screen", for tests

    def open(self) -> None:
        self._t0 = time.perf_counter()

    def now(self) -> float:
        if self.realtime:
            return time.perf_counter() - self._t0
        return self._virtual_s

    def _flip(self) -> float:
        """Wait for the next frame boundary; return its time."""
        self._frame += 1
        if self.realtime:
            target = self._next_boundary
            delay = target - self.now()
            if delay > 0:
                time.sleep(delay)
            now = self.now()
            # A late flip skips whole frames, as a real display would.
            self._next_boundary = target + self.frame_s * max(1, int(np.ceil((now - target) / self.frame_s + 1e-9)))
            return now
        self._virtual_s += self.frame_s
        return self._virtual_s

    def run_trial(self, plan: ShowPlan, on_onset: OnsetCallback, fixation: FixationSource) -> TrialOutcome:
        n = len(plan.image_hashes)
        total_frames = plan.fixation_frames + n * (plan.on_frames + plan.off_frames) + plan.iti_frames
        if self.realtime:
            self._next_boundary = self.now() + self.frame_s
        start = self.now()
        fixation.start_trial(plan.trial_id, start, total_frames * self.frame_s)
        flips = []
        onsets = 0
        schedule = [None] * plan.fixation_frames
        for i in range(n):
            schedule += [i] + [-1] * (plan.on_frames - 1) + [None] * plan.off_frames
        schedule += [None] * plan.iti_frames
        showing_images_until = plan.fixation_frames + n * (plan.on_frames + plan.off_frames)
        for f, what in enumerate(schedule):
            t = self._flip()
            flips.append(t)
            if isinstance(what, int) and what >= 0:
                self.screen = plan.pixels[what]
                on_onset(what, t, self._frame)
                onsets += 1
            elif what is None:
                self.screen = None
            if f < showing_images_until and not fixation.holding(t):
                return TrialOutcome(plan.trial_id, "aborted", start, t, onsets,
                                    self._dropped(flips), np.diff(flips).astype(np.float32), "fixation break")
        return TrialOutcome(plan.trial_id, "done", start, flips[-1] if flips else start, onsets,
                            self._dropped(flips), np.diff(flips).astype(np.float32))

    def _dropped(self, flips: list[float]) -> int:
        if len(flips) < 2:
            return 0
        gaps = np.diff(flips) / self.frame_s
        return int(np.sum(np.maximum(np.rint(gaps) - 1, 0)))

    def idle(self, duration_s: float) -> None:
        if self.realtime:
            time.sleep(max(0.0, duration_s))
        else:
            self._virtual_s += max(0.0, duration_s)

    def close(self) -> None:
        self.screen = None
