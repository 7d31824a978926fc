"""The simulated rig's recording system, as a part: a virtual V4 population behind a simulated recorder.

`VirtualCortex` is an AcquisitionSource (spike batches, recorded event codes and
heartbeats on the acquisition clock) and the target of the presenter's event
codes (`on_event`, `show`): `CortexEventOutput` hands them to it in process; the
cortex process (controller/services/cortex.py) hands it the ones that arrive on
its socket and publishes what it produces.

Time comes from the injected clock: an event code is stamped with `clock.stamp`
(on arrival on the wall clock, as a TTL input would stamp it; at the presenter's
flip time on a virtual clock) and mapped through the recording clock's offset and
drift. `poll` also brings the stream up to the clock's present, so on the wall
clock spikes flow while nothing happens, and on a virtual clock they do not.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from acquisition import openephys
from acquisition.population import Population
from acquisition.recording import RecordingClock, SpikeBatcher
from acquisition.spiking import SpikingModel
from controller import messages as m
from controller.parts import InProcessPart

STREAM = "virtual-cortex"


class VirtualCortex(InProcessPart):
    def __init__(self, rig, clock, population: Population | None = None, openephys_out=None):
        cc = rig.cortex
        self.clock = clock
        torch.set_num_threads(1)  # per-onset work is small; more threads only contend with the presenter
        self.population = population or Population(cc.population, rig.images.size_px, rig.images.colour)
        self.recording_clock = RecordingClock(cc.recording.clock_offset_s, cc.recording.clock_drift_ppm)
        self.now_s = self._acq(clock.now())
        self.spiking = SpikingModel(cc.spiking, self.population.baseline_hz, cc.population.seed + 1,
                                    start_s=self.now_s)
        self.batcher = SpikeBatcher(cc.recording, cc.population.seed)
        self.images: dict[str, np.ndarray] = {}
        self.outbox: list = []
        self.event_seq = 0
        self.hb_seq = 0
        self.last_code = 0
        self.heartbeat_s = cc.recording.heartbeat_ms / 1000
        self.last_heartbeat = -np.inf
        # Frames for an Open Ephys Event Broadcaster socket, when one is wanted (a callable taking frames).
        self.openephys_out = openephys_out

    def _acq(self, presenter_s: float) -> float:
        return float(self.recording_clock.to_acquisition(presenter_s))

    # -- AcquisitionSource -------------------------------------------------------
    def describe(self, timeout_s: float = 0.0) -> dict:
        return {"n_neurons": self.population.n_neurons, "streams": [STREAM], "kind": "virtual cortex"}

    def poll(self, timeout_s: float = 0.0) -> list:
        """What the stream has produced, brought up to the clock's present, with a heartbeat when one is due
        (heartbeats are paced by the wall clock: they say the recording system is alive)."""
        self.advance_to(self._acq(self.clock.now()))
        if time.monotonic() - self.last_heartbeat >= self.heartbeat_s:
            self.last_heartbeat = time.monotonic()
            self.outbox.append(self.heartbeat())
        out, self.outbox = self.outbox, []
        return out

    # -- what the recording system sees -------------------------------------------
    def advance_to(self, t_s: float) -> None:
        """Generate and batch the spikes in [now, t_s)."""
        if t_s <= self.now_s:
            return
        neuron, times = self.spiking.advance(t_s)
        batch = self.batcher.batch(self.now_s, t_s, neuron, times)
        self.now_s = t_s
        if batch is not None:
            self.outbox.append(m.SpikeBatch(stream=STREAM, seq=batch.seq, t_start_s=batch.t_start_s,
                                            t_end_s=batch.t_end_s, total_spikes=batch.total_spikes,
                                            neuron=batch.neuron, time_s=batch.time_s))
            if self.openephys_out is not None:
                for frames in openephys.encode_spikes(batch.neuron, batch.time_s, stream=STREAM):
                    self.openephys_out(frames)

    def show(self, image_hash: str, pixels: np.ndarray) -> None:
        self.images[image_hash] = np.array(pixels)

    def on_event(self, ev: m.EventCode) -> None:
        t = max(self._acq(self.clock.stamp(ev.time_s)), self.now_s)  # the acquisition clock never runs backwards
        self.advance_to(t)
        if ev.code == m.Codes.IMAGE_ONSET:
            pixels = self.images.get(ev.image_hash)
            if pixels is not None:
                self.spiking.add_onset(t, self.population.rates(pixels[None])[0])
        if self.openephys_out is not None:  # the code word on parallel TTL lines, as a digital input would see it
            for frames in openephys.encode_word(ev.code, self.last_code, t, stream=STREAM):
                self.openephys_out(frames)
            self.last_code = ev.code
        self.event_seq += 1
        self.outbox.append(m.EventCode(stream=STREAM, seq=self.event_seq, code=ev.code, time_s=t,
                                       clock="acquisition", trial_id=ev.trial_id, index=ev.index,
                                       image_hash=ev.image_hash))

    def heartbeat(self) -> m.Heartbeat:
        self.hb_seq += 1
        # batch_seq: the last batch made (sent or lost), so a receiver knows whether it has them all.
        return m.Heartbeat(role="cortex", seq=self.hb_seq, clock_s=self.now_s, stream=STREAM,
                           info={**self.describe(), "batch_seq": self.batcher.seq})


class CortexEventOutput:
    """EventOutput of the simulated rig in one process: codes and screen contents straight to the cortex."""

    def __init__(self, cortex: VirtualCortex):
        self.cortex = cortex
        self.seq = 0

    def write(self, code: int, time_s: float, trial_id: int, index: int, image_hash: str) -> None:
        self.seq += 1
        self.cortex.on_event(m.EventCode(stream="presenter", seq=self.seq, code=code, time_s=time_s,
                                         clock="presenter", trial_id=trial_id, index=index, image_hash=image_hash))

    def show(self, image_hash: str, pixels: np.ndarray) -> None:
        self.cortex.show(image_hash, pixels)

    def close(self) -> None:
        pass
