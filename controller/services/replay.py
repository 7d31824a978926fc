"""The replay process: a recorded session's acquisition stream, back on the acquisition socket.

It binds the same endpoints a cortex would (PUB for spikes and event codes, PULL
for control), waits for a subscriber to say it is listening (a Heartbeat), then
plays the stream and ends it with a Shutdown message.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import zmq

from acquisition.replay import paced, replay_order
from controller import messages as m
from controller.links import Receiver, parent_alive
from controller.store import SessionStore


class ReplayService:
    def __init__(self, source_dir: Path, endpoints: dict[str, str], speed: float | None,
                 ctx: zmq.Context | None = None, parent_pid: int | None = None):
        store = SessionStore.open(source_dir)
        try:
            self.items = replay_order(store.spike_batches(), store.event_codes(clock="acquisition"))
        finally:
            store.close()
        self.speed = speed
        self.parent_pid = parent_pid
        ctx = ctx or zmq.Context.instance()
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, 0)
        self.pub.setsockopt(zmq.LINGER, 5000)
        self.pub.bind(endpoints["acquisition_pub"])
        self.control = ctx.socket(zmq.PULL)
        self.control.bind(endpoints["acquisition_events"])
        self.receiver = Receiver(self.control)

    def _wait_for_listener(self) -> bool:
        while parent_alive(self.parent_pid):
            # Heartbeats make a late subscriber's SUB socket see something before it says it is ready.
            m.send(self.pub, m.Heartbeat(role="replay", seq=0, clock_s=-1.0))
            if self.control.poll(100):
                msg = self.receiver.recv()
                if isinstance(msg, m.Heartbeat):
                    return True
                if isinstance(msg, m.Shutdown):
                    return False
        return False

    def run(self) -> int:
        if not self._wait_for_listener():
            return 0
        for it in paced(self.items, self.speed):
            if it.kind == "spikes":
                stream, seq, t0, t1, total, neuron, times = it.record
                m.send(self.pub, m.SpikeBatch(stream=stream, seq=seq, t_start_s=t0, t_end_s=t1, total_spikes=total,
                                              neuron=np.asarray(neuron), time_s=np.asarray(times)))
            else:
                stream, seq, code, t, clock, trial_id, idx, h = it.record
                m.send(self.pub, m.EventCode(stream=stream, seq=seq, code=code, time_s=t, clock=clock,
                                             trial_id=trial_id, index=idx, image_hash=h or ""))
        m.send(self.pub, m.Shutdown("end of replay"))
        return 0

    def close(self) -> None:
        self.pub.close(linger=5000)
        self.control.close(linger=0)
