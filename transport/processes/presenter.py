"""The presenter process: the PresenterRunner part behind the presenter's sockets.

Plans arrive on a PULL socket and queue in the runner; what it reports (onsets
from the flip, trial reports, gaps, heartbeats) goes to the controller's inbox.
Event codes leave through the rig's event output (to the virtual cortex on the
simulated rig), written at the flip.
"""

from __future__ import annotations

import zmq

from contract import messages as m
from controller.clocks import make_clock
from controller.config import RigConfig
from stimulus.event_outputs import make_event_output
from stimulus.fixation import make_fixation
from stimulus.presenter_part import PresenterRunner
from stimulus.presenters import make_presenter
from transport.links import Receiver, bind, connect, parent_alive
from transport.security import keys_for
from transport.zmq_parts import ZmqEventOutput, image_context, limit_for


def make_rig_event_output(rig: RigConfig, endpoints: dict[str, str], screen, ctx: zmq.Context):
    """The rig file's event output: to the virtual cortex process ("zmq"), or TTL lines / LSL markers."""
    if rig.event_output.kind == "zmq":
        return ZmqEventOutput(endpoints["acquisition_events"], ctx, rig=rig)
    codes = [m.Codes.TRIAL_START, m.Codes.IMAGE_ONSET, m.Codes.TRIAL_END, m.Codes.TRIAL_ABORT]
    return make_event_output(rig.event_output, codes=codes, presenter_now=screen.now)


class PresenterService:
    """The presenter process's loop: `run()` until a Shutdown or the launcher is gone, then `close()`."""

    def __init__(
        self,
        rig: RigConfig,
        endpoints: dict[str, str],
        presenter=None,
        ctx: zmq.Context | None = None,
        parent_pid: int | None = None,
        clock_start_s: float = 0.0,
    ):
        self.rig = rig
        self.parent_pid = parent_pid
        clock = make_clock(rig.session.speed, clock_start_s)
        screen = presenter if presenter is not None else make_presenter(rig.display, clock)
        ctx = ctx or zmq.Context.instance()
        keys = keys_for(rig)
        self.plans_in = bind(
            limit_for(ctx.socket(zmq.PULL), "presenter_plans", rig),
            "presenter_plans",
            endpoints["presenter_plans"],
            keys,
        )
        self.receiver = Receiver(self.plans_in, context=image_context(rig))
        self.to_controller = limit_for(ctx.socket(zmq.PUSH), "controller_inbox", rig)
        self.to_controller.setsockopt(zmq.LINGER, 2000)
        connect(self.to_controller, "controller_inbox", endpoints["controller_inbox"], keys)
        self.events = make_rig_event_output(rig, endpoints, screen, ctx)
        self.runner = PresenterRunner(
            screen, make_fixation(rig.fixation, rig.display), self.events, clock, live_out=self._send_now
        )
        self.stopping = False

    def _send_now(self, msg) -> None:
        """A message sent during a trial (a heartbeat): never waited for; a full queue drops it (the frame
        comes first, and the next heartbeat is HEARTBEAT_S away)."""
        try:
            m.send(self.to_controller, msg, zmq.NOBLOCK)
        except zmq.Again:
            pass

    def _take_plans(self, timeout_ms: float = 0) -> None:
        if timeout_ms and not self.plans_in.poll(timeout_ms):
            return
        while (msg := self.receiver.recv()) is not None:
            if isinstance(msg, m.Shutdown):
                self.stopping = True
            elif isinstance(msg, m.TrialPlan):
                self.runner.submit(msg)

    def run(self) -> int:
        self.runner.open()
        try:
            while not self.stopping and parent_alive(self.parent_pid):
                self._take_plans()
                waiting = not self.runner.queue
                for msg in self.runner.poll(self.runner.IDLE_S):
                    m.send(self.to_controller, msg)
                if waiting and not self.runner.clock.passes_while_waiting:
                    self._take_plans(timeout_ms=50)  # nothing to show and no time passes: wait for a plan
        finally:
            self.runner.close()
        return 0

    def close(self) -> None:
        self.plans_in.close(linger=0)
        self.to_controller.close(linger=2000)
        self.events.close()
