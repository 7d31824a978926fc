"""The presenter part: plans in, frames on a screen, onsets, trial reports and event codes out.

`PresenterRunner` owns a screen (stimulus.presenters: a PsychoPy window or the
headless stand-in), the fixation source and an EventOutput. Plans queue here, so
the screen never waits for the model. Each onset is reported from the flip: the
event code goes out through the EventOutput inside the flip callback, and an
OnsetReport to the controller. With an empty queue the screen shows the idle
frame while time passes (the wall clock) and the gap is reported; on a virtual
clock waiting takes no time and there is no gap.

In one process the engine calls `submit` and `poll` directly; the presenter
process (controller/services/presenter.py) does the same with plans from its
socket and sends what `poll` returns.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np

from controller import messages as m
from controller.parts import InProcessPart
from stimulus.presenters.base import ShowPlan


def show_plan(plan: m.TrialPlan) -> ShowPlan:
    return ShowPlan(plan.trial_id, np.asarray(plan.pixels), list(plan.image_hashes), plan.fixation_frames,
                    plan.on_frames, plan.off_frames, plan.iti_frames)


class PresenterRunner(InProcessPart):
    IDLE_S = 0.005  # how long the idle frame is shown before the queue is looked at again
    HEARTBEAT_S = 0.5  # wall clock: says the presenter is alive (between trials)

    def __init__(self, screen, fixation, events, clock):
        self.screen = screen
        self.fixation = fixation
        self.events = events
        self.clock = clock
        self.queue: deque[m.TrialPlan] = deque()
        self.sent_images: set[str] = set()
        self.hb_seq = 0
        self.trials_shown = 0
        self.gap_start: float | None = None
        self.opened = False
        self.last_heartbeat = -float("inf")

    def open(self) -> None:
        if not self.opened:
            self.screen.open()
            self.opened = True

    # -- Presenter part ------------------------------------------------------------
    def submit(self, plan: m.TrialPlan) -> None:
        self.open()
        self.screen.prepare(show_plan(plan))  # upload textures now, not during the trial
        self.queue.append(plan)

    def poll(self, timeout_s: float = 0.0) -> list:
        """Show the next queued trial and return its reports; with none queued, idle (if time passes)."""
        out: list = []
        if time.monotonic() - self.last_heartbeat >= self.HEARTBEAT_S:
            self.last_heartbeat = time.monotonic()
            out.append(self.heartbeat())
        if self.queue:
            if self.gap_start is not None:
                out.append(self._gap_report())
            self.show(self.queue.popleft(), out)
        elif self.clock.passes_while_waiting and self.opened:
            if self.gap_start is None and self.trials_shown:
                self.gap_start = self.screen.now()
            self.screen.idle(min(timeout_s, self.IDLE_S) if timeout_s > 0 else self.IDLE_S)
        return out

    def close(self) -> None:
        if self.opened:
            self.screen.close()
            self.opened = False

    # -- what it does ---------------------------------------------------------------
    def heartbeat(self) -> m.Heartbeat:
        self.hb_seq += 1
        return m.Heartbeat(role="presenter", seq=self.hb_seq, clock_s=self.screen.now(), info=self.describe())

    def describe(self) -> dict:
        """What the controller records about the display: which screen, and how frames are paced."""
        return {"presenter": type(self.screen).__name__, "frame_pacing": self.screen.pacing,
                "measured_refresh_hz": self.screen.measured_refresh_hz, "refresh_hz": self.screen.refresh_hz}

    def show(self, plan: m.TrialPlan, out: list) -> None:
        for h, px in zip(plan.image_hashes, plan.pixels):
            if h not in self.sent_images:
                self.events.show(h, px)
                self.sent_images.add(h)
        start = self.screen.now()
        out.append(m.TrialReport(trial_id=plan.trial_id, status="started", start_s=start, end_s=start,
                                 dropped_frames=0, n_onsets=0))
        self.events.write(m.Codes.TRIAL_START, start, plan.trial_id, -1, "")

        def on_onset(index: int, flip_s: float, frame: int) -> None:
            h = plan.image_hashes[index]
            self.events.write(m.Codes.IMAGE_ONSET, flip_s, plan.trial_id, index, h)
            out.append(m.OnsetReport(trial_id=plan.trial_id, index=index, image_hash=h, flip_s=flip_s, frame=frame))

        result = self.screen.run_trial(show_plan(plan), on_onset, self.fixation)
        self.events.write(m.Codes.TRIAL_END if result.status == "done" else m.Codes.TRIAL_ABORT, result.end_s,
                          plan.trial_id, -1, "")
        out.append(m.TrialReport(trial_id=plan.trial_id, status=result.status, start_s=result.start_s,
                                 end_s=result.end_s, dropped_frames=result.dropped_frames,
                                 n_onsets=result.n_onsets, reason=result.reason,
                                 frame_intervals_s=np.asarray(result.frame_intervals_s, np.float32),
                                 onset_to_flip_error_s=np.asarray(self.screen.last_onset_to_flip_error_s,
                                                                  np.float32)))
        self.trials_shown += 1

    def _gap_report(self) -> m.TrialReport:
        start, self.gap_start = self.gap_start, None
        return m.TrialReport(trial_id=-1, status="gap", start_s=start, end_s=self.screen.now(),
                             dropped_frames=0, n_onsets=0, reason="plan queue empty")
