"""Clocks: the one place that knows real time from virtual time (times in seconds).

Every part that needs time is handed a Clock and asks it; none tests a "realtime" flag.

- WallClock: now() is time.monotonic(); sleep_until sleeps; stamp() ignores the reported time and
  stamps arrival; time passes while a part waits; no training budget (the model trains in the
  background); deadlines are perf_counter() values.
- VirtualClock: now() is the latest time any part set; sleep_until and stamp move it forward, never
  back; nothing happens while a part waits; plans get `steps_per_trial` training steps, so runs are
  reproducible; no deadlines.

Each process (or each part in one process) has its own clock object, as each machine of a rig has its
own clock; clock alignment maps one to another.
"""

from __future__ import annotations

import time


class WallClock:
    """Seconds of time.monotonic(): the clock of a live rig and of a real-time simulated rig."""

    name = "wall"
    passes_while_waiting = True  # a screen shows frames while it waits; a late plan is really late

    def now(self) -> float:
        return time.monotonic()

    def sleep_until(self, t: float) -> None:
        delay = t - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def stamp(self, reported_s: float) -> float:
        """The time an event arrived (a TTL input stamps on arrival, whatever the sender says)."""
        return self.now()

    def training_budget(self, steps_per_trial: int) -> int | None:
        return None

    def deadline_in(self, seconds: float) -> float | None:
        return time.perf_counter() + seconds


class VirtualClock:
    """Time that moves only when a part says what time it is: a frame counted, an event received.

    Nothing waits on wall time, so a session runs as fast as the CPU goes and two runs with the same
    seeds give the same spikes, plans and models."""

    name = "virtual"
    passes_while_waiting = False

    def __init__(self, start_s: float = 0.0):
        self._now = float(start_s)

    def now(self) -> float:
        return self._now

    def sleep_until(self, t: float) -> None:
        self._now = max(self._now, float(t))

    def stamp(self, reported_s: float) -> float:
        self.sleep_until(reported_s)
        return self._now

    def training_budget(self, steps_per_trial: int) -> int | None:
        return steps_per_trial

    def deadline_in(self, seconds: float) -> float | None:
        return None


def make_clock(speed: str, start_s: float = 0.0):
    """The clock for a rig file's session.speed: "realtime" -> WallClock, "max" -> VirtualClock from start_s (a
    resumed session's virtual time goes on after the part already recorded; wall time goes on by itself)."""
    if speed == "realtime":
        return WallClock()
    if speed == "max":
        return VirtualClock(start_s)
    raise ValueError(f"session.speed {speed!r}: expected 'realtime' or 'max'")
