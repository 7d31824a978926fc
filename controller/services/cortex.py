"""The virtual cortex process: a simulated V4 population behind a simulated recording system.

Receives the presenter's event codes (and the pixels it shows) on a PULL socket,
records each code on the acquisition clock, turns onsets into spikes, and
publishes spike batches, recorded event codes and heartbeats on a PUB socket.

realtime: the acquisition clock follows time.monotonic() through the configured
offset and drift; batches go out every batch_ms; event codes are stamped on arrival,
as a TTL input would stamp them.
max speed: the acquisition clock is virtual and moves only with the presenter's
event codes (mapped through offset and drift), so nothing waits on wall time.
"""
from __future__ import annotations

import time

import numpy as np
import torch
import zmq

from acquisition import openephys
from acquisition.population import Population
from acquisition.recording import RecordingClock, SpikeBatcher
from acquisition.spiking import SpikingModel
from controller import messages as m
from controller.config import RigConfig
from controller.links import Receiver, parent_alive

STREAM = "virtual-cortex"


class VirtualCortexService:
    def __init__(self, rig: RigConfig, endpoints: dict[str, str], ctx: zmq.Context | None = None,
                 parent_pid: int | None = None):
        self.rig = rig
        self.realtime = rig.session.speed == "realtime"
        self.parent_pid = parent_pid
        torch.set_num_threads(1)  # per-onset work is small; more threads only contend with the presenter
        cc = rig.cortex
        self.population = Population(cc.population, rig.images.size_px, rig.images.colour)
        self.clock = RecordingClock(cc.recording.clock_offset_s, cc.recording.clock_drift_ppm)
        start = float(self.clock.to_acquisition(time.monotonic() if self.realtime else 0.0))
        self.spiking = SpikingModel(cc.spiking, self.population.baseline_hz, cc.population.seed + 1, start_s=start)
        self.batcher = SpikeBatcher(cc.recording, cc.population.seed)
        self.now_s = start
        self.images: dict[str, np.ndarray] = {}
        self.event_seq = 0
        self.hb_seq = 0
        ctx = ctx or zmq.Context.instance()
        self.pub = ctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.SNDHWM, 0)
        self.pub.setsockopt(zmq.LINGER, 1000)
        self.pub.bind(endpoints["acquisition_pub"])
        self.events_in = ctx.socket(zmq.PULL)
        self.events_in.bind(endpoints["acquisition_events"])
        self.receiver = Receiver(self.events_in)
        self.oe_pub = None
        if endpoints.get("openephys_pub"):
            self.oe_pub = ctx.socket(zmq.PUB)
            self.oe_pub.setsockopt(zmq.SNDHWM, 0)
            self.oe_pub.setsockopt(zmq.LINGER, 0)
            self.oe_pub.bind(endpoints["openephys_pub"])
        self.last_code = 0

    def _acq_now(self) -> float:
        return float(self.clock.to_acquisition(time.monotonic()))

    def advance_to(self, t_s: float) -> None:
        """Generate and publish the spikes in [now, t_s)."""
        if t_s <= self.now_s:
            return
        neuron, times = self.spiking.advance(t_s)
        batch = self.batcher.batch(self.now_s, t_s, neuron, times)
        self.now_s = t_s
        if batch is not None:
            m.send(self.pub, m.SpikeBatch(stream=STREAM, seq=batch.seq, t_start_s=batch.t_start_s,
                                          t_end_s=batch.t_end_s, total_spikes=batch.total_spikes,
                                          neuron=batch.neuron, time_s=batch.time_s))
            if self.oe_pub is not None:
                for frames in openephys.encode_spikes(batch.neuron, batch.time_s, stream=STREAM):
                    self.oe_pub.send_multipart(frames)

    def on_event(self, ev: m.EventCode) -> None:
        t = self._acq_now() if self.realtime else float(self.clock.to_acquisition(ev.time_s))
        t = max(t, self.now_s)  # the acquisition clock never runs backwards
        self.advance_to(t)
        if ev.code == m.Codes.IMAGE_ONSET:
            pixels = self.images.get(ev.image_hash)
            if pixels is not None:
                self.spiking.add_onset(t, self.population.rates(pixels[None])[0])
        if self.oe_pub is not None:  # the code word on parallel TTL lines, as a digital input would see it
            for frames in openephys.encode_word(ev.code, self.last_code, t, stream=STREAM):
                self.oe_pub.send_multipart(frames)
            self.last_code = ev.code
        self.event_seq += 1
        m.send(self.pub, m.EventCode(stream=STREAM, seq=self.event_seq, code=ev.code, time_s=t, clock="acquisition",
                                     trial_id=ev.trial_id, index=ev.index, image_hash=ev.image_hash))

    def heartbeat(self) -> None:
        self.hb_seq += 1
        m.send(self.pub, m.Heartbeat(role="cortex", seq=self.hb_seq, clock_s=self.now_s, stream=STREAM))

    def run(self) -> int:
        rec = self.rig.cortex.recording
        batch_s, hb_s = rec.batch_ms / 1000, rec.heartbeat_ms / 1000
        next_batch = time.monotonic() + batch_s
        next_hb = time.monotonic()
        while parent_alive(self.parent_pid):
            timeout = max(0.0, min(next_batch if self.realtime else next_hb, next_hb) - time.monotonic())
            if self.events_in.poll(timeout * 1000):
                while (msg := self.receiver.recv()) is not None:
                    if isinstance(msg, m.Shutdown):
                        self.heartbeat()
                        return 0
                    if isinstance(msg, m.ScreenImage):
                        self.images[msg.image_hash] = np.array(msg.pixels)
                    elif isinstance(msg, m.EventCode):
                        self.on_event(msg)
            now = time.monotonic()
            if self.realtime and now >= next_batch:
                self.advance_to(self._acq_now())
                next_batch += batch_s * max(1, int((now - next_batch) // batch_s) + 1)
            if now >= next_hb:
                self.heartbeat()
                next_hb = now + hb_s
        return 0

    def close(self) -> None:
        self.pub.close(linger=1000)
        if self.oe_pub is not None:
            self.oe_pub.close(linger=0)
        self.events_in.close(linger=0)
