"""Replaying a recorded acquisition stream: spike batches and event codes in their recorded order.

Pure logic: merges the recorded batches and event codes by acquisition time and
paces them (recorded speed, a multiple of it, or as fast as possible). The
replay process (controller/services/replay.py) puts them on the same socket a
live or virtual acquisition system would use.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator


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


def paced(items: list[ReplayItem], speed: float | None) -> Iterator[ReplayItem]:
    """Yield items at `speed` times their recorded pace (None: as fast as possible)."""
    if not items:
        return
    t0_rec = items[0].time_s
    t0_wall = time.monotonic()
    for it in items:
        if speed:
            delay = t0_wall + (it.time_s - t0_rec) / speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield it
