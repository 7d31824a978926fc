"""The PsychoPy presenter: a pyglet window, frame-accurate onsets, a photodiode patch.

Images, the fixation point and the photodiode patch are placed in pixels computed from degrees and the rig's
monitor calibration (stimulus/presenters/geometry.py). Timing (docs/presentation.md):

- Every frame of a trial is one win.flip(), on the schedule of stimulus/presenters/frames.py.
- Each onset is stamped inside the flip (win.callOnFlip), and on_onset sends the onset report and the event
  code at once. Frame intervals and dropped frames come from the times win.flip() returns; an onset's
  onset-to-flip error is its callback stamp minus its flip's return time.
- frame_pacing "vsync" waits for the vertical blank; "software" sleeps to each frame boundary (a display
  without vsync, such as Xvfb, where intervals prove the code path, not the rig's timing); "auto" measures at
  open and chooses.
- Textures are uploaded before a trial's first frame (prepare()), cached by image hash.

The photodiode patch toggles black/white at every onset and holds otherwise, so every transition is exactly
one onset. PsychoPy is imported when the window opens: `import psychopy.visual` needs a display.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

import numpy as np

from stimulus.config import DisplayConfig
from stimulus.presenters.base import FixationSource, OnsetCallback, ShowPlan, TrialOutcome
from stimulus.presenters.frames import IDLE_SLOT, FrameSlot, frames_for, trial_outcome, trial_schedule
from stimulus.presenters.geometry import photodiode_rect_px, rect_deg_to_px, size_deg_to_px


class PsychoPyPresenter:
    """The Presenter on a PsychoPy window (not opened until open())."""

    def __init__(self, display: DisplayConfig, grab_onset_frames: bool = False):
        self.display = display
        self.refresh_hz = float(display.refresh_hz)
        self.frame_s = 1.0 / self.refresh_hz
        # Tests and calibration: keep the pixels of every onset frame (slow: reads the frame buffer).
        self.grab_onset_frames = grab_onset_frames
        self.grabbed: list[tuple[int, np.ndarray]] = []
        self.win: Any = None
        self.pacing = display.frame_pacing
        self.measured_refresh_hz: float | None = None
        self.photodiode_white = False
        self.last_onset_to_flip_error_s: list[float] = []
        self._frame = 0
        self._next_boundary = 0.0
        self._stims: OrderedDict[str, Any] = OrderedDict()
        self._clock: Any = None
        self._pending_onset: tuple[int, float] | None = None

    # ------------------------------------------------------------------ window
    def open(self) -> None:
        from psychopy import logging as pp_logging
        from psychopy import monitors, visual

        d = self.display
        monitor = monitors.Monitor("cortexloop", width=d.screen_width_cm, distance=d.viewing_distance_cm, autoLog=False)
        monitor.setSizePix(list(d.resolution_px))
        if d.gamma is not None:
            monitor.setGamma(d.gamma)
        self.win = visual.Window(
            size=list(d.resolution_px),
            monitor=monitor,
            units="deg",
            screen=d.screen_index,
            fullscr=d.fullscreen,
            allowGUI=False,
            color=d.background_rgb,
            colorSpace="rgb",
            gamma=d.gamma,
            gammaErrorPolicy="raise",
            waitBlanking=True,
            checkTiming=False,
            winType="pyglet",
            autoLog=False,
        )
        self.win.recordFrameIntervals = False  # intervals come from our own flip times
        self.win.mouseVisible = False
        # The clock win.flip() stamps with; now() reads the same one.
        self._clock = pp_logging.defaultClock
        size = tuple(int(v) for v in self.win.size)
        if size != tuple(d.resolution_px):
            self.close()
            raise RuntimeError(
                f"window opened at {size} px, but display.resolution_px is {d.resolution_px}: degrees would be wrong"
            )
        self._make_fixed_stims()
        self._choose_pacing()

    def _make_fixed_stims(self) -> None:
        from psychopy import visual

        d = self.display
        pd = photodiode_rect_px(d)
        self._photodiode = visual.Rect(
            self.win,
            width=pd.size[0],
            height=pd.size[1],
            pos=pd.centre,
            units="pix",
            lineWidth=0,
            fillColor=(-1, -1, -1),
            colorSpace="rgb",
            autoLog=False,
        )
        fix = rect_deg_to_px(d.fixation_pos_deg, d.fixation_size_deg, d)
        diameter = max(2.0, size_deg_to_px(d.fixation_size_deg, d))
        self._fixation = visual.Circle(
            self.win,
            radius=diameter / 2.0,
            pos=fix.centre,
            units="pix",
            edges=32,
            lineWidth=0,
            fillColor=d.fixation_rgb,
            colorSpace="rgb",
            autoLog=False,
        )
        self._image_rect = rect_deg_to_px(d.image_pos_deg, d.image_size_deg, d)

    def _measure_flip_interval(self, n: int = 30) -> float:
        for _ in range(5):  # warm up: the first swaps of a new window are irregular
            self._draw(None, IDLE_SLOT)
            self.win.flip()
        times = []
        for _ in range(n):
            self._draw(None, IDLE_SLOT)
            times.append(self.win.flip())
        return float(np.median(np.diff(times)))

    def _choose_pacing(self) -> None:
        d = self.display
        if self.pacing == "software":
            return
        interval = self._measure_flip_interval()
        self.measured_refresh_hz = 1.0 / interval if interval > 0 else float("inf")
        if self.pacing == "auto":
            # Flips far faster than the configured refresh: nothing waits for a blank.
            self.pacing = "software" if self.measured_refresh_hz > 1.5 * self.refresh_hz else "vsync"
            if self.pacing == "software":
                from psychopy import logging as pp_logging

                pp_logging.warning(
                    f"cortexloop: flips return at {self.measured_refresh_hz:.0f} Hz (no vsync); "
                    f"pacing frames in software at {self.refresh_hz:g} Hz. Timing is not "
                    "rig-accurate on this display."
                )
                return
        off = abs(self.measured_refresh_hz - self.refresh_hz) / self.refresh_hz
        if off > d.refresh_tolerance:
            self.close()
            raise RuntimeError(
                f"display runs at {self.measured_refresh_hz:.2f} Hz but display.refresh_hz is "
                f"{self.refresh_hz:g}: frame counts would give the wrong durations"
            )

    def now(self) -> float:
        if self._clock is None:
            from psychopy import logging as pp_logging

            self._clock = pp_logging.defaultClock
        return float(self._clock.getTime())

    def close(self) -> None:
        self._stims.clear()
        if self.win is not None:
            self.win.close()
            self.win = None

    def __enter__(self) -> "PsychoPyPresenter":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- textures
    def prepare(self, plan: ShowPlan) -> None:
        """Upload the plan's images as textures (cached by hash). Safe to call ahead of run_trial."""
        from PIL import Image
        from psychopy import visual

        r = self._image_rect
        drew = False
        for i, h in enumerate(plan.image_hashes):
            if h in self._stims:
                self._stims.move_to_end(h)
                continue
            pixels = np.ascontiguousarray(plan.pixels[i])
            if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
                raise ValueError(
                    f"trial {plan.trial_id} image {i}: need uint8 HxWx1 or HxWx3, got {pixels.dtype} {pixels.shape}"
                )
            # A PIL image, not a numpy array: PsychoPy then flips rows itself (row 0
            # is the top of the image, as everywhere else in cortexloop) and keeps
            # the 0..255 range exactly. Numpy textures would need a signed -1..1 range
            # for grey images and an unsigned 0..1 one for RGB in PsychoPy 2026.
            image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
            self._stims[h] = visual.ImageStim(
                self.win,
                image=image,
                units="pix",
                size=r.size,
                pos=r.centre,
                interpolate=self.display.image_interpolation == "linear",
                autoLog=False,
            )
            # Drivers may defer the real upload to the first draw: draw once now,
            # off screen, so the on period never pays for it.
            self._stims[h].draw()
            drew = True
            while len(self._stims) > self.display.texture_cache_images:
                self._stims.popitem(last=False)
        if drew:
            self.win.clearBuffer()

    # ----------------------------------------------------------------- drawing
    def _draw(self, stims: list[Any] | None, slot: FrameSlot) -> None:
        d = self.display
        fixation = d.fixation_point and slot.fixation_point
        if fixation and not d.fixation_over_image:
            self._fixation.draw()
        if slot.image >= 0 and stims is not None:
            stims[slot.image].draw()
        if fixation and d.fixation_over_image:
            self._fixation.draw()
        self._photodiode.fillColor = (1, 1, 1) if self.photodiode_white else (-1, -1, -1)
        self._photodiode.draw()

    def grab_back_buffer(self) -> np.ndarray:
        """The frame drawn so far and not yet flipped, HxWx3 uint8, row 0 = top of the screen.

        Read from the back buffer before the flip: under Xvfb the front buffer
        reads back as black after a swap.
        """
        return np.asarray(self.win._getFrame(buffer="back"))

    def _flip(self) -> float:
        if self.pacing == "software":
            delay = self._next_boundary - self.now()
            if delay > 0:
                time.sleep(delay)
        t = float(self.win.flip())
        self._frame += 1
        if self.pacing == "software":
            # A frame more than half a refresh late counts as shown at a later
            # refresh, as with vsync; the next frame goes one refresh after that.
            missed = int(round(max(0.0, t - self._next_boundary) / self.frame_s))
            self._next_boundary += self.frame_s * (1 + missed)
        return t

    def _restart_pacing_if_behind(self) -> None:
        if self.pacing == "software" and self.now() > self._next_boundary:
            self._next_boundary = self.now() + self.frame_s

    # ------------------------------------------------------------------ trials
    def _stamp_onset(self, index: int, on_onset: OnsetCallback) -> None:
        """Called by PsychoPy inside win.flip(), right after the swap: the onset time."""
        t = self.now()
        self._pending_onset = (index, t)
        on_onset(index, t, self._frame + 1)

    def run_trial(self, plan: ShowPlan, on_onset: OnsetCallback, fixation: FixationSource) -> TrialOutcome:
        if self.win is None:
            raise RuntimeError("PsychoPyPresenter.run_trial before open()")
        schedule = trial_schedule(plan)
        self.prepare(plan)  # all textures on the card before the first frame
        stims = [self._stims[h] for h in plan.image_hashes]
        self._restart_pacing_if_behind()
        start = self.now()
        fixation.start_trial(plan.trial_id, start, len(schedule) * self.frame_s)
        flips: list[float] = []
        onsets = 0
        self.last_onset_to_flip_error_s = []
        for slot in schedule:
            if slot.onset:
                self.photodiode_white = not self.photodiode_white
            self._draw(stims, slot)
            if slot.onset:
                if self.grab_onset_frames:
                    self.grabbed.append((slot.image, self.grab_back_buffer()))
                self._pending_onset = None
                self.win.callOnFlip(self._stamp_onset, slot.image, on_onset)
            t = self._flip()
            flips.append(t)
            if slot.onset:
                onsets += 1
                if self._pending_onset is not None:
                    self.last_onset_to_flip_error_s.append(self._pending_onset[1] - t)
            if slot.needs_fixation and not fixation.holding(t):
                self._draw(None, IDLE_SLOT)  # the image goes off at the next refresh
                flips.append(self._flip())
                return trial_outcome(plan.trial_id, "aborted", start, flips, onsets, self.frame_s, "fixation break")
        return trial_outcome(plan.trial_id, "done", start, flips, onsets, self.frame_s)

    def idle(self, duration_s: float) -> None:
        """Fixation point on the background for the whole frames closest to duration_s.

        Flipping (rather than sleeping) keeps the window responsive and the
        photodiode patch and fixation point on screen.
        """
        if self.win is None:
            raise RuntimeError("PsychoPyPresenter.idle before open()")
        self._restart_pacing_if_behind()
        for _ in range(frames_for(duration_s, self.refresh_hz)):
            self._draw(None, IDLE_SLOT)
            self._flip()
