"""The presenter process: plans in, frames on screen, onsets and event codes out.

Plans arrive on a PULL socket and queue here; the presenter never waits for the
model. Each onset is reported from the flip: an OnsetReport to the controller
and an event code to the acquisition system. With an empty queue it shows the
fixation/blank screen and reports the gap.
"""
from __future__ import annotations

import time
from collections import deque

import numpy as np
import zmq

from controller import messages as m
from controller.config import RigConfig
from controller.links import Receiver, parent_alive
from stimulus.fixation import make_fixation
from stimulus.presenters import make_presenter
from stimulus.presenters.base import ShowPlan


def _show_plan(plan: m.TrialPlan) -> ShowPlan:
    return ShowPlan(plan.trial_id, np.asarray(plan.pixels), list(plan.image_hashes), plan.fixation_frames,
                    plan.on_frames, plan.off_frames, plan.iti_frames)


class PresenterService:
    HEARTBEAT_S = 0.5

    def __init__(self, rig: RigConfig, endpoints: dict[str, str], presenter=None, ctx: zmq.Context | None = None,
                 parent_pid: int | None = None):
        self.rig = rig
        self.realtime = rig.session.speed == "realtime"
        self.parent_pid = parent_pid
        self.presenter = presenter if presenter is not None else make_presenter(
            rig.display, realtime=rig.session.speed == "realtime")
        self.fixation = make_fixation(rig.fixation, rig.display)
        self.sim_screen = rig.cortex.source == "virtual"  # the virtual cortex must "see" the pixels
        ctx = ctx or zmq.Context.instance()
        self.plans_in = ctx.socket(zmq.PULL)
        self.plans_in.bind(endpoints["presenter_plans"])
        self.receiver = Receiver(self.plans_in)
        self.to_controller = ctx.socket(zmq.PUSH)
        self.to_controller.connect(endpoints["controller_inbox"])
        self.to_acquisition = ctx.socket(zmq.PUSH)
        self.to_acquisition.connect(endpoints["acquisition_events"])
        for s in (self.to_controller, self.to_acquisition):
            s.setsockopt(zmq.LINGER, 2000)
        self.queue: deque[m.TrialPlan] = deque()
        self.sent_images: set[str] = set()
        self.event_seq = 0
        self.hb_seq = 0
        self.last_hb = 0.0
        self.stopping = False

    def _event(self, code: int, t: float, trial_id: int, index: int = -1, image_hash: str = "") -> None:
        self.event_seq += 1
        m.send(self.to_acquisition, m.EventCode(stream="presenter", seq=self.event_seq, code=code, time_s=t,
                                                clock="presenter", trial_id=trial_id, index=index,
                                                image_hash=image_hash))

    def _heartbeat(self) -> None:
        now = time.monotonic()
        if now - self.last_hb >= self.HEARTBEAT_S:
            self.hb_seq += 1
            m.send(self.to_controller, m.Heartbeat(role="presenter", seq=self.hb_seq, clock_s=self.presenter.now(),
                                                   info=self.describe()))
            self.last_hb = now

    def describe(self) -> dict:
        """What the controller records about the display: which presenter, and how frames are paced."""
        return {"presenter": type(self.presenter).__name__,
                "frame_pacing": getattr(self.presenter, "pacing", "wall clock" if self.realtime else "virtual clock"),
                "measured_refresh_hz": getattr(self.presenter, "measured_refresh_hz", None),
                "refresh_hz": self.presenter.refresh_hz}

    def _drain(self, timeout_ms: float = 0) -> None:
        if timeout_ms and not self.plans_in.poll(timeout_ms):
            return
        while (msg := self.receiver.recv()) is not None:
            if isinstance(msg, m.Shutdown):
                self.stopping = True
            elif isinstance(msg, m.TrialPlan):
                if hasattr(self.presenter, "prepare"):  # upload textures now, not during the trial
                    self.presenter.prepare(_show_plan(msg))
                self.queue.append(msg)

    def show(self, plan: m.TrialPlan) -> None:
        if self.sim_screen:
            for h, px in zip(plan.image_hashes, plan.pixels):
                if h not in self.sent_images:
                    m.send(self.to_acquisition, m.ScreenImage(image_hash=h, pixels=px))
                    self.sent_images.add(h)
        start = self.presenter.now()
        m.send(self.to_controller, m.TrialReport(trial_id=plan.trial_id, status="started", start_s=start, end_s=start,
                                                 dropped_frames=0, n_onsets=0))
        self._event(m.Codes.TRIAL_START, start, plan.trial_id)

        def on_onset(index: int, flip_s: float, frame: int) -> None:
            h = plan.image_hashes[index]
            self._event(m.Codes.IMAGE_ONSET, flip_s, plan.trial_id, index, h)
            m.send(self.to_controller, m.OnsetReport(trial_id=plan.trial_id, index=index, image_hash=h,
                                                     flip_s=flip_s, frame=frame))

        out = self.presenter.run_trial(_show_plan(plan), on_onset, self.fixation)
        errors = getattr(self.presenter, "last_onset_to_flip_error_s", [])
        self._event(m.Codes.TRIAL_END if out.status == "done" else m.Codes.TRIAL_ABORT, out.end_s, plan.trial_id)
        m.send(self.to_controller, m.TrialReport(trial_id=plan.trial_id, status=out.status, start_s=out.start_s,
                                                 end_s=out.end_s, dropped_frames=out.dropped_frames,
                                                 n_onsets=out.n_onsets, reason=out.reason,
                                                 frame_intervals_s=np.asarray(out.frame_intervals_s, np.float32),
                                                 onset_to_flip_error_s=np.asarray(errors, np.float32)))

    def run(self) -> int:
        self.presenter.open()
        gap_start = None
        try:
            while not self.stopping and parent_alive(self.parent_pid):
                self._heartbeat()
                self._drain()
                if self.queue:
                    if gap_start is not None:
                        self._report_gap(gap_start)
                        gap_start = None
                    self.show(self.queue.popleft())
                    continue
                if self.realtime:
                    if gap_start is None and self.event_seq > 0:
                        gap_start = self.presenter.now()
                    self.presenter.idle(0.005)  # fixation/blank screen for a moment, then look again
                else:
                    self._drain(timeout_ms=50)  # virtual clock: nothing to show, no time passes
        finally:
            self.presenter.close()
        return 0

    def _report_gap(self, start: float) -> None:
        end = self.presenter.now()
        m.send(self.to_controller, m.TrialReport(trial_id=-1, status="gap", start_s=start, end_s=end,
                                                 dropped_frames=0, n_onsets=0, reason="plan queue empty"))

    def close(self) -> None:
        self.plans_in.close(linger=0)
        self.to_controller.close(linger=2000)
        self.to_acquisition.close(linger=2000)
