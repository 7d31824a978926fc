"""From rates to spike times, on the recording system's clock.

First version: inhomogeneous Poisson spikes; each onset adds a boxcar of
(rate - baseline) from latency to latency + response duration.

Interface (stateful, time only moves forward):
    SpikingModel(cfg: SpikingConfig, baseline_hz (N,), seed)
    .add_onset(onset_s, rates_hz (N,))       # an image appeared at onset_s (acquisition clock)
    .advance(t_end_s) -> (neuron uint16, time_s float64), spikes in [previous t_end, t_end), time-sorted
"""
from __future__ import annotations

import numpy as np

from acquisition.config import SpikingConfig


class SpikingModel:
    def __init__(self, cfg: SpikingConfig, baseline_hz: np.ndarray, seed: int, start_s: float = 0.0):
        self.cfg = cfg
        self.baseline = np.asarray(baseline_hz, np.float64)
        self.n = len(self.baseline)
        self.rng = np.random.default_rng(seed)
        self.latency_s = self.rng.uniform(*cfg.latency_ms, self.n) / 1000.0
        self.t = start_s
        self.onsets: list[tuple[float, np.ndarray]] = []

    def add_onset(self, onset_s: float, rates_hz: np.ndarray) -> None:
        self.onsets.append((onset_s, np.asarray(rates_hz, np.float64) - self.baseline))

    def advance(self, t_end_s: float) -> tuple[np.ndarray, np.ndarray]:
        t0, t1 = self.t, t_end_s
        if t1 <= t0:
            return np.zeros(0, np.uint16), np.zeros(0)
        dur = self.cfg.response_duration_ms / 1000.0
        ids, times = [], []
        # Baseline everywhere, then the stimulus-driven extra rate inside each response period.
        segments = [(t0, t1, self.baseline, np.arange(self.n))]
        for onset, extra in self.onsets:
            a = np.maximum(onset + self.latency_s, t0)
            b = np.minimum(onset + self.latency_s + dur, t1)
            live = b > a
            for i in np.flatnonzero(live):
                segments.append((a[i], b[i], np.array([max(extra[i], -self.baseline[i])]), np.array([i])))
        for a, b, rate, who in segments:
            if np.isscalar(a):
                counts = self.rng.poisson(np.maximum(rate, 0) * (b - a))
                for i, c in zip(who, counts):
                    if c:
                        ids.append(np.full(c, i, np.uint16))
                        times.append(self.rng.uniform(a, b, c))
        # Drop onsets whose responses are over.
        self.onsets = [(o, e) for o, e in self.onsets if o + self.latency_s.max() + dur > t1]
        self.t = t1
        if not ids:
            return np.zeros(0, np.uint16), np.zeros(0)
        neuron = np.concatenate(ids)
        time_s = np.concatenate(times)
        order = np.argsort(time_s, kind="stable")
        return neuron[order], time_s[order]
