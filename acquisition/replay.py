"""Replaying a recorded acquisition stream: spike batches and event codes in their recorded order.

Pure logic: merges the recorded batches and event codes by acquisition time, in
the order a recording system produced them; controller/replay.py feeds them to
the engine as an acquisition source.
"""
from __future__ import annotations

from dataclasses import dataclass


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
