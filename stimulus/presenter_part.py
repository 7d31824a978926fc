"""The presenter part: plans in, frames on a screen, onsets, trial reports and event codes out.

`PresenterRunner` owns a screen (stimulus.presenters: a PsychoPy window or the
headless stand-in), the fixation source and an EventOutput. Plans queue here, so
the screen never waits for the model. Each onset is reported from the flip: the
event code goes out through the EventOutput inside the flip callback, and an
OnsetReport to the controller. With an empty queue the screen shows the idle
frame while time passes (the wall clock) and the gap is reported; on a virtual
clock waiting takes no time and there is no gap.

In one process the engine calls `submit` and `poll` directly; the presenter
process (transport/processes/presenter.py) does the same with plans from its
socket and sends what `poll` returns.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from contract import messages as m
from contract.parts import InProcessPart
from stimulus.presenters.base import ShowPlan


def show_plan(plan: m.TrialPlan) -> ShowPlan:
    """A wire TrialPlan as the screen takes it."""
    return ShowPlan(
        plan.trial_id,
        np.asarray(plan.pixels),
        list(plan.image_hashes),
        plan.fixation_frames,
        plan.on_frames,
        plan.off_frames,
        plan.iti_frames,
    )


class PresenterRunner(InProcessPart):
    """The Presenter part over a screen, a fixation source and an EventOutput (the module docstring)."""

    IDLE_S = 0.005  # how long the idle frame is shown before the queue is looked at again
    HEARTBEAT_S = 0.5  # wall clock: says the presenter is alive (between trials, and between a trial's flips)

    def __init__(self, screen, fixation, events, clock, live_out=None):
        """live_out: callable(message) that sends a message at once without blocking (the presenter process's
        socket to the controller). Given, heartbeats go out during a trial too, between flips; in one process
        there is no one to tell while the trial runs, and none are sent then."""
        self.screen = screen
        self.fixation = fixation
        self.live_out = live_out
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
    def heartbeat(self, info: bool = True) -> m.Heartbeat:
        self.hb_seq += 1
        return m.Heartbeat(
            role="presenter", seq=self.hb_seq, clock_s=self.screen.now(), info=self.describe() if info else {}
        )

    def _beat_between_flips(self) -> None:
        """During a trial: a heartbeat at most every HEARTBEAT_S. Called right after a flip, where the next
        frame is furthest away; it costs one clock read, and every HEARTBEAT_S a small message sent without
        waiting (no display description: nothing that could take long)."""
        now = time.monotonic()
        if now - self.last_heartbeat >= self.HEARTBEAT_S:
            self.last_heartbeat = now
            self.live_out(self.heartbeat(info=False))

    def describe(self) -> dict:
        """What the controller records about the display: which screen, and how frames are paced."""
        return {
            "presenter": type(self.screen).__name__,
            "frame_pacing": self.screen.pacing,
            "measured_refresh_hz": self.screen.measured_refresh_hz,
            "refresh_hz": self.screen.refresh_hz,
        }

    def show(self, plan: m.TrialPlan, out: list) -> None:
        for h, px in zip(plan.image_hashes, plan.pixels):
            if h not in self.sent_images:
                self.events.show(h, px)
                self.sent_images.add(h)
        start = self.screen.now()
        out.append(
            m.TrialReport(
                trial_id=plan.trial_id, status="started", start_s=start, end_s=start, dropped_frames=0, n_onsets=0
            )
        )
        self.events.write(m.Codes.TRIAL_START, start, plan.trial_id, -1, "")

        def on_onset(index: int, flip_s: float, frame: int) -> None:
            h = plan.image_hashes[index]
            self.events.write(m.Codes.IMAGE_ONSET, flip_s, plan.trial_id, index, h)
            out.append(m.OnsetReport(trial_id=plan.trial_id, index=index, image_hash=h, flip_s=flip_s, frame=frame))

        fixation = self.fixation if self.live_out is None else _BeatAfterFlips(self.fixation, self._beat_between_flips)
        result = self.screen.run_trial(show_plan(plan), on_onset, fixation)
        self.events.write(
            m.Codes.TRIAL_END if result.status == "done" else m.Codes.TRIAL_ABORT, result.end_s, plan.trial_id, -1, ""
        )
        out.append(
            m.TrialReport(
                trial_id=plan.trial_id,
                status=result.status,
                start_s=result.start_s,
                end_s=result.end_s,
                dropped_frames=result.dropped_frames,
                n_onsets=result.n_onsets,
                reason=result.reason,
                frame_intervals_s=np.asarray(result.frame_intervals_s, np.float32),
                onset_to_flip_error_s=np.asarray(self.screen.last_onset_to_flip_error_s, np.float32),
            )
        )
        self.trials_shown += 1

    def _gap_report(self) -> m.TrialReport:
        start, self.gap_start = self.gap_start, None
        return m.TrialReport(
            trial_id=-1,
            status="gap",
            start_s=start,
            end_s=self.screen.now(),
            dropped_frames=0,
            n_onsets=0,
            reason="plan queue empty",
        )


class _BeatAfterFlips:
    """The fixation source as the screen sees it during a trial: the screen asks it, right after each flip of
    the frames that need fixation (fixation, image, blank between images), whether fixation holds; that moment
    is used to send the presenter's heartbeat too. Frames of the inter-trial interval ask nothing, so the
    controller's silence limit for the presenter allows for that interval (engine._check_alive)."""

    def __init__(self, inner, beat):
        self.inner = inner
        self.beat = beat

    def start_trial(self, trial_id: int, start_s: float, duration_s: float) -> None:
        self.inner.start_trial(trial_id, start_s, duration_s)

    def holding(self, now_s: float) -> bool:
        held = self.inner.holding(now_s)
        self.beat()
        return held

    def __getattr__(self, name):  # anything else a fixation source has (a tracker's state) is the inner one's
        return getattr(self.inner, name)


class StoredPresenter(InProcessPart):
    """The Presenter of a replay: each submitted trial's recorded onsets and report (nothing for a trial the
    recording never showed)."""

    def __init__(self, store):
        self.trials = {t["trial_id"]: t for t in store.trials()}
        self.onsets: dict[int, list] = {}
        for tid, idx, h, flip, frame in store.onsets():
            self.onsets.setdefault(tid, []).append(
                m.OnsetReport(trial_id=tid, index=idx, image_hash=h, flip_s=flip, frame=frame)
            )
        self.queue: list[int] = []

    def submit(self, plan: m.TrialPlan) -> None:
        self.queue.append(plan.trial_id)

    def poll(self, timeout_s: float = 0.0) -> list:
        if not self.queue:
            return []
        tid = self.queue.pop(0)
        t = self.trials.get(tid)
        if t is None:  # the recording ended before this trial was shown
            return []
        return self.onsets.get(tid, []) + [
            m.TrialReport(
                trial_id=tid,
                status=t["status"],
                start_s=t["start_s"],
                end_s=t["end_s"],
                n_onsets=t["n_onsets"],
                dropped_frames=t["dropped_frames"],
                reason=t["reason"] or "",
                frame_intervals_s=t["frame_intervals_s"],
                onset_to_flip_error_s=t["onset_to_flip_error_s"],
            )
        ]
