"""Spike counts per presentation in the response window, on the acquisition clock.

A window [onset + start, onset + end) is complete only when the stream's own
clock has passed its end, so late-arriving spikes are never cut off; the same
rule works on a virtual clock.
"""

from __future__ import annotations

import numpy as np


class SpikeRecord:
    """The spikes received so far (a growing, time-ordered record, trimmed behind the oldest open window)."""

    def __init__(self, n_neurons: int):
        self.n_neurons = n_neurons
        self._neuron: list[np.ndarray] = []
        self._time: list[np.ndarray] = []
        self.clock_s = -np.inf  # how far the stream's clock has got (end of the last batch or heartbeat)

    def add(self, neuron: np.ndarray, time_s: np.ndarray, clock_s: float) -> None:
        if len(neuron):
            if int(neuron.max()) >= self.n_neurons:
                raise ValueError(f"spike from neuron {int(neuron.max())}, only {self.n_neurons} configured")
            self._neuron.append(np.asarray(neuron))
            self._time.append(np.asarray(time_s, np.float64))
        self.advance(clock_s)

    def advance(self, clock_s: float) -> None:
        self.clock_s = max(self.clock_s, clock_s)

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if len(self._time) > 1:
            self._neuron = [np.concatenate(self._neuron)]
            self._time = [np.concatenate(self._time)]
        if not self._time:
            return np.zeros(0, np.uint16), np.zeros(0)
        return self._neuron[0], self._time[0]

    def complete(self, window_end_s: float) -> bool:
        return self.clock_s >= window_end_s

    def counts(self, starts_s: np.ndarray, ends_s: np.ndarray) -> np.ndarray:
        """(n_windows, n_neurons) spike counts in [start, end) for each window."""
        return count_in_windows(*self._arrays(), starts_s, ends_s, self.n_neurons)

    def forget_before(self, t_s: float) -> None:
        """Drop spikes older than t_s (no open window reaches back that far): bounded memory."""
        neuron, time_s = self._arrays()
        keep = time_s >= t_s
        self._neuron, self._time = [neuron[keep]], [time_s[keep]]


def count_in_windows(
    neuron: np.ndarray, time_s: np.ndarray, starts_s: np.ndarray, ends_s: np.ndarray, n_neurons: int
) -> np.ndarray:
    """Count spikes of each neuron in each half-open window [start, end). Vectorized per neuron."""
    starts_s = np.asarray(starts_s, np.float64)
    ends_s = np.asarray(ends_s, np.float64)
    out = np.zeros((len(starts_s), n_neurons), np.float32)
    if len(time_s) == 0 or len(starts_s) == 0:
        return out
    order = np.lexsort((time_s, neuron))
    neuron, time_s = neuron[order], time_s[order]
    bounds = np.searchsorted(neuron, np.arange(n_neurons + 1))
    for n in range(n_neurons):
        t = time_s[bounds[n] : bounds[n + 1]]
        if len(t):
            out[:, n] = np.searchsorted(t, ends_s, "left") - np.searchsorted(t, starts_s, "left")
    return out
