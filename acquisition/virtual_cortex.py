"""The simulated rig's recording system, as a part: a virtual V4 population behind a simulated recorder.

`VirtualCortex` is an AcquisitionSource (spike batches, recorded event codes and
heartbeats on the acquisition clock) and the target of the presenter's event
codes (`on_event`, `show`): `CortexEventOutput` hands them to it in process; the
cortex process (transport/processes/acquisition.py) hands it the ones that arrive on
its socket and publishes what it produces.

Time comes from the injected clock: an event code is stamped with `clock.stamp`
(on arrival on the wall clock, as a TTL input would stamp it; at the presenter's
flip time on a virtual clock) and mapped through the recording clock's offset and
drift. `poll` also brings the stream up to the clock's present, so on the wall
clock spikes flow while nothing happens, and on a virtual clock they do not.

Every spike and recorded code falls on the sample grid (`session.acquisition_sample_rate_hz`), so the
native stream and the Open Ephys stream carry the same times; the Open Ephys stream names neuron n's unit
("Electrode n+1", n+1), as the GUI's Spike Sorter numbers units (one counter over all electrodes). A code
is recorded at the sample its TTL word is raised (acquisition/ttl.py: later than asked when the lines are
still busy). The screen shows
each flip `photodiode_lag_ms` (+ jitter) later: the neurons see the image then, and the photodiode line
(if any) toggles then, recorded as a PHOTODIODE code. More: docs/virtual-cortex.md.
"""

from __future__ import annotations

import heapq
import time

import numpy as np
import torch

from acquisition import openephys
from acquisition.population import Population
from acquisition.recording import RecordingClock, SpikeBatcher
from acquisition.spiking import SpikingModel
from acquisition.ttl import Transition, TtlEncoder, pulse_samples
from contract import messages as m
from contract.parts import InProcessPart

STREAM = "virtual-cortex"
TTL_CHANNEL = "TTL Input"  # the Open Ephys TTL channel of the code lines and the photodiode
OTHER_TTL_CHANNEL = "Crossing Detector"  # the rehearsal's other TTL channel on the same stream


class VirtualCortex(InProcessPart):
    """The simulated recording system as an AcquisitionSource and the target of event codes (`on_event`, `show`);
    `epoch` > 0 numbers the stream of a resumed recording afresh."""

    def __init__(self, rig, clock, population: Population | None = None, openephys_out=None, epoch: int = 0):
        # A recording resumed after the controller stopped is a new stream (its batches are numbered afresh).
        self.stream = STREAM if epoch == 0 else f"{STREAM}-{epoch}"
        cc = rig.cortex
        self.clock = clock
        torch.set_num_threads(1)  # per-onset work is small; more threads only contend with the presenter
        self.population = population or Population(cc.population, rig.images.size_px, rig.images.colour)
        self.recording_clock = RecordingClock(cc.recording.clock_offset_s, cc.recording.clock_drift_ppm)
        self.sample_rate = float(rig.session.acquisition_sample_rate_hz)
        self.jump_from_s = None  # the simulated fault rehearsal.clock_jump_s: set once start_s is known
        self.jumped = False
        faults = rig.rehearsal
        self.ledger = faults.ledger
        self.now_s = self._acq(clock.now())
        self.start_s = self.now_s
        self.jump_s = faults.clock_jump_s
        if faults.clock_jump_after_s is not None and self.jump_s:
            self.jump_from_s = self.start_s + faults.clock_jump_after_s
        # The simulated fault rehearsal.reorder: a batch held back, sent after the next one.
        self.reorder = faults.reorder
        # Its own generator, so the loss draws do not depend on the reorder draws.
        self.reorder_rng = np.random.default_rng(cc.population.seed + 104_729)
        self.held: m.SpikeBatch | None = None
        self.spiking = SpikingModel(cc.spiking, self.population.baseline_hz, cc.population.seed + 1, start_s=self.now_s)
        self.batcher = SpikeBatcher(faults, cc.population.seed)
        self.images: dict[str, np.ndarray] = {}
        self.outbox: list = []
        self.event_seq = 0
        self.hb_seq = 0
        self.heartbeat_s = cc.recording.heartbeat_ms / 1000
        self.last_heartbeat = -np.inf
        # The digital inputs: code words under the rig's scheme, the photodiode on its own line. Transitions
        # wait in `pending` (sample order) until the stream's clock reaches them, so the Open Ephys stream is
        # in time order, spikes and TTL events alike.
        self.ttl = TtlEncoder(cc.ttl.lines(), pulse_samples(cc.ttl.pulse_ms, self.sample_rate))
        self.photodiode_line = cc.ttl.photodiode_line
        self.photodiode_high = False
        self.last_photodiode_sample = -1
        self.display_lag_s = cc.recording.photodiode_lag_ms / 1000
        self.display_jitter_s = cc.recording.photodiode_jitter_ms / 1000
        self.display_rng = np.random.default_rng(cc.population.seed + 15_485_863)
        self.pending: list[Transition] = []
        self.codes_not_on_lines = 0  # codes the lines cannot carry (recorded natively at the flip only)
        self.stop_after_s = faults.stop_after_s
        self.stall = (faults.stall_after_s, faults.stall_after_s + faults.stall_s) if faults.stall_after_s else None
        # Frames for an Open Ephys Event Broadcaster socket, when one is wanted (a callable taking frames).
        self.openephys_out = openephys_out
        # Open Ephys TTL events held back (rehearsal.ttl_delay_ms) or of the other channel, sent once the stream
        # passes their sample: a heap of (sample to send at, order, frames).
        self.ttl_delay_samples = int(round(faults.ttl_delay_ms / 1000 * self.sample_rate))
        self.held_ttl: list = []
        self.held_order = 0
        self.word_sample, self.word_line = -1, 0  # the current word's sample and how many of its lines went out
        self.last_held_at = 0
        self.other_ttl_period = self.sample_of(1.0 / faults.other_ttl_channel_hz) if faults.other_ttl_channel_hz else 0
        self.other_ttl_next = self.sample_of(self.now_s) + self.other_ttl_period if self.other_ttl_period else 0

    def _acq(self, presenter_s: float) -> float:
        t = float(self.recording_clock.to_acquisition(presenter_s))
        if self.jump_from_s is not None and t >= self.jump_from_s:
            if self.ledger and not self.jumped:
                print(f"ledger {self.stream} clock_jump {self.jump_s!r} at {self.jump_from_s!r}", flush=True)
            self.jumped = True
            t += self.jump_s
        return t

    def _ledger(self, seq: int, n_spikes: int, fate: str) -> None:
        # One line per batch, flushed: what the stream carried survives this process being killed. Under the
        # fault stop_after_s nothing is published any more: the batch is "stopped", not sent.
        fate = "stopped" if fate != "dropped" and self.stopped() else fate
        print(f"ledger {self.stream} {seq} {n_spikes} {fate}", flush=True)

    def on_grid(self, t_s):
        """Times as the recording system has them: on its sample grid."""
        return np.rint(np.asarray(t_s, np.float64) * self.sample_rate) / self.sample_rate

    def sample_of(self, t_s: float) -> int:
        return int(np.rint(t_s * self.sample_rate))

    # -- AcquisitionSource -------------------------------------------------------
    def describe(self, timeout_s: float = 0.0) -> dict:
        return {
            "n_neurons": self.population.n_neurons,
            "streams": [self.stream],
            "kind": "virtual cortex",
            "sample_rate_hz": self.sample_rate,
            "photodiode": self.photodiode_line is not None,
        }

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
        """Generate and batch the spikes in [now, t_s), with the TTL transitions the clock reaches on the way.
        A simulated stall or stop that begins or ends on the way is stepped to first: on a virtual clock (speed
        "max") one step can be longer than the stall, and the spikes inside it must still go unpublished."""
        if t_s <= self.now_s:
            return
        for edge in self._fault_edges():
            if self.now_s < edge < t_s:
                self._advance(edge)
        self._advance(t_s)

    def _fault_edges(self) -> list[float]:
        since = ([] if self.stall is None else list(self.stall)) + (
            [] if self.stop_after_s is None else [self.stop_after_s]
        )
        return sorted(self.start_s + x for x in since)

    def _silent_from(self, t_s: float) -> bool:
        """Whether the recording system publishes nothing from t_s on (until the next fault edge)."""
        since = t_s - self.start_s
        if self.stall is not None and self.stall[0] <= since < self.stall[1]:
            return True
        return self.stop_after_s is not None and since >= self.stop_after_s

    def _advance(self, t_s: float) -> None:
        silent = self._silent_from(self.now_s)
        neuron, times = self.spiking.advance(t_s)
        times = self.on_grid(times)
        batch = self.batcher.batch(self.now_s, t_s, neuron, times)
        self.now_s = t_s
        due = self._due_ttl(int(np.floor(t_s * self.sample_rate)))
        if batch is None:
            if self.ledger:
                self._ledger(self.batcher.seq, len(neuron), "dropped")
        elif silent:  # generated (the spiking goes on), never published
            if self.ledger:
                self._ledger(batch.seq, len(batch.neuron), "stopped")
            batch = None
        if batch is not None:
            msg = m.SpikeBatch(
                stream=self.stream,
                seq=batch.seq,
                t_start_s=batch.t_start_s,
                t_end_s=batch.t_end_s,
                total_spikes=batch.total_spikes,
                neuron=batch.neuron,
                time_s=batch.time_s,
            )
            if self.held is not None:  # the batch held back goes after this one
                self.outbox += [msg, self.held]
                self.held = None
            elif self.reorder > 0 and self.reorder_rng.random() < self.reorder:
                self.held = msg
            else:
                self.outbox.append(msg)
            if self.ledger:
                self._ledger(batch.seq, len(batch.neuron), "delayed" if self.held is msg else "sent")
        if self.openephys_out is None or silent:
            return
        # The Open Ephys stream in time order: each TTL transition before the spikes of later samples.
        spikes = (
            []
            if batch is None
            else openephys.encode_spikes(batch.neuron, batch.time_s, self.sample_rate, stream=self.stream)
        )
        spike_samples = [] if batch is None else np.rint(batch.time_s * self.sample_rate).astype(np.int64).tolist()
        end_sample = int(np.floor(t_s * self.sample_rate))
        self._other_channel(end_sample)
        k = 0
        for frames, sample in zip(spikes, spike_samples):
            while k < len(due) and due[k].sample <= sample:
                self._send_ttl(due[k])
                k += 1
            if self.held_ttl:
                self._release_ttl(sample)
            self.openephys_out(frames)
        for tr in due[k:]:
            self._send_ttl(tr)
        self._release_ttl(end_sample)

    def _due_ttl(self, up_to_sample: int) -> list[Transition]:
        """The TTL transitions the stream's clock has reached (sample <= up_to_sample), taken from `pending`;
        a photodiode edge among them is recorded as a PHOTODIODE code."""
        k = 0
        while k < len(self.pending) and self.pending[k].sample <= up_to_sample:
            k += 1
        due, self.pending = self.pending[:k], self.pending[k:]
        for tr in due:
            if tr.line == self.photodiode_line:
                self.event_seq += 1
                self.outbox.append(
                    m.EventCode(
                        stream=self.stream,
                        seq=self.event_seq,
                        code=m.Codes.PHOTODIODE,
                        time_s=tr.sample / self.sample_rate,
                        clock="acquisition",
                    )
                )
        return due

    def _send_ttl(self, tr: Transition) -> None:
        frames = openephys.encode_ttl(
            tr.sample, tr.line, tr.state, self.sample_rate, stream=self.stream, channel_name=TTL_CHANNEL
        )
        if not self.ttl_delay_samples:
            self.openephys_out(frames)
            return
        # Held back: each line of a word a little later than the one before, so they arrive in separate polls,
        # and never before an earlier TTL (a channel's events stay in sample order, as the GUI sends them).
        self.word_line = self.word_line + 1 if tr.sample == self.word_sample else 0
        self.word_sample = tr.sample
        late = self.ttl_delay_samples + self.word_line * self.ttl_delay_samples // 8
        self.last_held_at = max(self.last_held_at, tr.sample + late)
        self._hold_ttl(self.last_held_at, frames)

    def _hold_ttl(self, send_at: int, frames) -> None:
        self.held_order += 1
        heapq.heappush(self.held_ttl, (send_at, self.held_order, frames))

    def _release_ttl(self, up_to_sample: int) -> None:
        while self.held_ttl and self.held_ttl[0][0] <= up_to_sample:
            self.openephys_out(heapq.heappop(self.held_ttl)[2])

    def _other_channel(self, up_to_sample: int) -> None:
        """The rehearsal's other TTL channel: lines 0 and 1 high for 1 ms, every other_ttl_period samples."""
        if not self.other_ttl_period:
            return
        width = max(1, self.sample_of(0.001))
        while self.other_ttl_next <= up_to_sample:
            s = self.other_ttl_next
            for at, state in ((s, True), (s + width, False)):
                for line in (0, 1):
                    self._hold_ttl(
                        at,
                        openephys.encode_ttl(
                            at, line, state, self.sample_rate, stream=self.stream, channel_name=OTHER_TTL_CHANNEL
                        ),
                    )
            self.other_ttl_next += self.other_ttl_period

    def _schedule(self, transitions) -> None:
        self.pending = sorted(self.pending + list(transitions), key=lambda tr: tr.sample)

    def show(self, image_hash: str, pixels: np.ndarray) -> None:
        self.images[image_hash] = np.array(pixels)

    def on_event(self, ev: m.EventCode) -> None:
        t = max(self._acq(self.clock.stamp(ev.time_s)), self.now_s)  # the acquisition clock never runs backwards
        self.advance_to(t)
        flip = self.sample_of(t)
        try:
            raised, transitions = self.ttl.write(ev.code, flip)  # later than the flip if the lines were busy
            self._schedule(transitions)
        except ValueError:  # a code wider than the lines: a TTL input would not see it either
            raised = flip
            self.codes_not_on_lines += 1
        if ev.code == m.Codes.IMAGE_ONSET:
            # The screen shows the image a display lag after the flip: the neurons see it, and the photodiode
            # reports it, then.
            shown = flip + int(
                np.rint((self.display_lag_s + self.display_rng.uniform(0.0, self.display_jitter_s)) * self.sample_rate)
            )
            if self.photodiode_line is not None:
                shown = max(shown, self.last_photodiode_sample + 1)  # one edge per onset, in order
                self.photodiode_high = not self.photodiode_high
                self.last_photodiode_sample = shown
                self._schedule([Transition(shown, self.photodiode_line, self.photodiode_high)])
            pixels = self.images.get(ev.image_hash)
            if pixels is not None:
                self.spiking.add_onset(
                    max(shown / self.sample_rate, self.now_s), self.population.rates(pixels[None])[0]
                )
        for tr in self._due_ttl(int(np.floor(self.now_s * self.sample_rate))):  # a word raised at once
            if self.openephys_out is not None:
                self._send_ttl(tr)
        self.event_seq += 1
        self.outbox.append(
            m.EventCode(
                stream=self.stream,
                seq=self.event_seq,
                code=ev.code,
                time_s=raised / self.sample_rate,
                clock="acquisition",
                trial_id=ev.trial_id,
                index=ev.index,
                image_hash=ev.image_hash,
            )
        )

    def heartbeat(self) -> m.Heartbeat:
        self.hb_seq += 1
        # batch_seq: the last batch made (sent or lost), so a receiver knows whether it has them all.
        return m.Heartbeat(
            role="cortex",
            seq=self.hb_seq,
            clock_s=self.now_s,
            stream=self.stream,
            info={**self.describe(), "batch_seq": self.batcher.seq},
        )

    def stopped(self) -> bool:
        """The simulated faults `rehearsal.stop_after_s` and `stall_after_s`: the recording system publishes
        nothing (for good, or for the stall's stall_s)."""
        return self._silent_from(self.now_s)
