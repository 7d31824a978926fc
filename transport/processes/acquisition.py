"""The virtual cortex process: the VirtualCortex part behind the simulated rig's sockets.

Event codes and screen images from the presenter arrive on a PULL socket and go
to the cortex; what it produces (spike batches, recorded event codes, heartbeats
carrying its description) goes out on a PUB socket. Every `batch_ms` the stream is
brought up to the clock's present: on the wall clock that is a batch of spikes,
on a virtual clock nothing (time moves only with the event codes).

Two outputs, each switched off by its endpoint = "off":

- `acquisition_pub`: the native stream (SpikeBatch, EventCode, Heartbeat);
  off, nothing at all goes out on it, heartbeats included (a rig with
  `source = "openephys"` reads only the Open Ephys socket, as it would read a
  real one);
- `openephys_pub`: the same spikes and codes in the Open Ephys GUI Event
  Broadcaster's format (spikes, TTL lines), what a live rig's acquisition PC sends.

The fault `rehearsal.stop_after_s` stops both (the process keeps running and
draining its input), as a recording system that stops streaming would.
"""

from __future__ import annotations

import time

import zmq

from acquisition.population import Population
from acquisition.virtual_cortex import VirtualCortex
from contract import messages as m
from controller.clocks import make_clock
from controller.config import RigConfig
from transport.links import Receiver, bind, parent_alive
from transport.security import keys_for


class VirtualCortexService:
    """The virtual cortex process's loop: `run()` until a Shutdown or the launcher is gone, then `close()`."""

    def __init__(
        self,
        rig: RigConfig,
        endpoints: dict[str, str],
        ctx: zmq.Context | None = None,
        parent_pid: int | None = None,
        population: Population | None = None,
        epoch: int = 0,
        clock_start_s: float = 0.0,
    ):
        self.rig = rig
        self.parent_pid = parent_pid
        ctx = ctx or zmq.Context.instance()
        keys = keys_for(rig)
        self.pub = None
        if endpoints.get("acquisition_pub"):
            self.pub = ctx.socket(zmq.PUB)
            self.pub.setsockopt(zmq.SNDHWM, 0)
            self.pub.setsockopt(zmq.LINGER, 1000)
            bind(self.pub, "acquisition_pub", endpoints["acquisition_pub"], keys)
        self.events_in = ctx.socket(zmq.PULL)
        bind(self.events_in, "acquisition_events", endpoints["acquisition_events"], keys)
        self.receiver = Receiver(self.events_in)
        self.lsl_out = None
        if rig.cortex.source == "lsl" and rig.cortex.lsl.virtual_cortex:
            from acquisition.lsl_source import LslCodeOutlet, LslSpikeOutlet

            self.lsl_out = (
                LslSpikeOutlet(rig.cortex.lsl.spike_stream, n_units=rig.cortex.lsl.n_neurons),
                LslCodeOutlet(rig.cortex.lsl.code_stream),
            )
        self.oe_pub = None
        if endpoints.get("openephys_pub"):
            self.oe_pub = ctx.socket(zmq.PUB)
            self.oe_pub.setsockopt(zmq.SNDHWM, 0)
            self.oe_pub.setsockopt(zmq.LINGER, 0)
            bind(self.oe_pub, "openephys_pub", endpoints["openephys_pub"], keys)
        if self.pub is None and self.oe_pub is None and self.lsl_out is None:
            raise ValueError(
                "the virtual cortex has no output: endpoints acquisition_pub and openephys_pub are "
                'both "off" and it publishes no LSL streams'
            )
        self.cortex = VirtualCortex(
            rig,
            make_clock(rig.session.speed, clock_start_s),
            population,
            epoch=epoch,
            openephys_out=self._send_openephys if self.oe_pub is not None else None,
        )

    def _send_openephys(self, frames) -> None:
        if not self.cortex.stopped():
            self.oe_pub.send_multipart(frames)

    def publish(self) -> None:
        msgs = self.cortex.poll(0)
        if self.cortex.stopped():
            return
        if self.pub is not None:
            for msg in msgs:
                m.send(self.pub, msg)
        if self.lsl_out is not None:  # the same spikes and codes as LSL streams, as a recording system would send
            spikes, codes = self.lsl_out
            for msg in msgs:
                if isinstance(msg, m.SpikeBatch) and len(msg.neuron):
                    spikes.push(msg.neuron, msg.time_s)
                elif isinstance(msg, m.EventCode) and msg.code != m.Codes.PHOTODIODE:
                    codes.push(msg.code, msg.time_s)

    def run(self) -> int:
        batch_s = self.rig.cortex.recording.batch_ms / 1000
        next_batch = time.monotonic()
        while parent_alive(self.parent_pid):
            if self.events_in.poll(max(0.0, next_batch - time.monotonic()) * 1000):
                while (msg := self.receiver.recv()) is not None:
                    if isinstance(msg, m.Shutdown):
                        if self.pub is not None and not self.cortex.stopped():
                            m.send(self.pub, self.cortex.heartbeat())
                        return 0
                    if isinstance(msg, m.ScreenImage):
                        self.cortex.show(msg.image_hash, msg.pixels)
                    elif isinstance(msg, m.EventCode):
                        self.cortex.on_event(msg)
                self.publish()
            now = time.monotonic()
            if now >= next_batch:
                self.publish()
                next_batch += batch_s * max(1, int((now - next_batch) // batch_s) + 1)
        return 0

    def close(self) -> None:
        if self.pub is not None:
            self.pub.close(linger=1000)
        if self.oe_pub is not None:
            self.oe_pub.close(linger=0)
        self.events_in.close(linger=0)
