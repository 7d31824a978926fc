"""Replaying a recorded acquisition stream: spike batches and event codes in their recorded order.

Pure logic: merges the recorded batches and event codes by acquisition time, in
the order a recording system produced them. `StoredStream` is the AcquisitionSource
of a replay: it hands them to the engine a few at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract import messages as m
from contract.parts import InProcessPart

ITEMS_PER_POLL = 64  # the stream arrives a few batches at a time, as it would from a recording system


@dataclass(frozen=True)
class ReplayItem:
    time_s: float  # acquisition clock: batch end, or event code time
    kind: str  # "spikes" or "event"
    record: tuple


def replay_order(batches: list[tuple], events: list[tuple]) -> list[ReplayItem]:
    """batches: (stream, seq, t_start, t_end, total, neuron, time); events: (stream, seq, code, time_s, ...).

    A batch goes out when its time span is over (at t_end); an event code at its time.
    Ties keep batches first, so spikes before an event are delivered before it.
    """
    items = [ReplayItem(b[3], "spikes", b) for b in batches] + [ReplayItem(e[3], "event", e) for e in events]
    order = {"spikes": 0, "event": 1}
    return sorted(items, key=lambda it: (it.time_s, order[it.kind]))


def recorded_neuron_count(store) -> int:
    """The stream's neuron count as recorded (a store without that record: the width of its stored responses)."""
    stored = store.meta("neurons")
    if stored is not None:
        return int(stored)
    row = store.conn.execute("SELECT counts FROM responses LIMIT 1").fetchone()
    return 0 if row is None else len(np.frombuffer(row[0], np.float32))


class StoredStream(InProcessPart):
    """The AcquisitionSource of a replay: a stored session's batches and acquisition-clock event codes."""

    def __init__(self, store):
        self.n_neurons = recorded_neuron_count(store)
        self.proof = store.meta("stream_proof") or "clock"  # what proved the recorded stream live
        self.items = replay_order(store.spike_batches(), store.event_codes(clock="acquisition"))
        self.next = 0

    def describe(self, timeout_s: float = 0.0) -> dict:
        return {"n_neurons": self.n_neurons, "kind": "stored session", "proof": self.proof}

    def poll(self, timeout_s: float = 0.0) -> list:
        out = []
        for it in self.items[self.next : self.next + ITEMS_PER_POLL]:
            if it.kind == "spikes":
                stream, seq, t0, t1, total, neuron, times = it.record
                out.append(
                    m.SpikeBatch(
                        stream=stream,
                        seq=seq,
                        t_start_s=t0,
                        t_end_s=t1,
                        total_spikes=total,
                        neuron=np.asarray(neuron),
                        time_s=np.asarray(times),
                    )
                )
            else:
                stream, seq, code, t, clock, trial_id, idx, h = it.record
                out.append(
                    m.EventCode(
                        stream=stream,
                        seq=seq,
                        code=code,
                        time_s=t,
                        clock=clock,
                        trial_id=trial_id,
                        index=idx,
                        image_hash=h or "",
                    )
                )
        self.next += len(out)
        return out
