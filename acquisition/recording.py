"""The simulated recording system: its own clock, event codes recorded on it, spikes batched on it.

Pure logic: the cortex process (transport/processes/acquisition.py) feeds it the
presenter's event codes and asks it for batches; sockets live there.

Clock model: acquisition_s = offset_s + (1 + drift_ppm * 1e-6) * presenter_s.
An event code is stamped where the TTL line would put it: the presenter's flip
time mapped through that clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from acquisition.config import RehearsalConfig


@dataclass(frozen=True)
class RecordingClock:
    """The simulated recording system's clock against the presenter's (the module's clock model)."""

    offset_s: float
    drift_ppm: float

    @property
    def rate(self) -> float:
        return 1.0 + self.drift_ppm * 1e-6

    def to_acquisition(self, presenter_s):
        return self.offset_s + self.rate * np.asarray(presenter_s)

    def to_presenter(self, acquisition_s):
        return (np.asarray(acquisition_s) - self.offset_s) / self.rate


@dataclass
class Batch:
    """A batch of spikes ready to publish (the native SpikeBatch fields)."""

    seq: int
    t_start_s: float
    t_end_s: float
    total_spikes: int
    neuron: np.ndarray
    time_s: np.ndarray


class SpikeBatcher:
    """Cuts the spike stream into sequenced batches; drops some on purpose when `packet_loss` > 0.

    `total_spikes` is cumulative over everything generated, so a receiver that sees
    a sequence gap also knows how many spikes it lost.
    """

    def __init__(self, cfg: RehearsalConfig, seed: int = 0):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed + 7919)
        self.seq = 0
        self.total = 0
        self.lost_batches = 0
        self.lost_spikes = 0

    def batch(self, t_start_s: float, t_end_s: float, neuron: np.ndarray, time_s: np.ndarray) -> Batch | None:
        """One batch covering [t_start_s, t_end_s); None when the simulated network lost it."""
        self.seq += 1
        self.total += len(neuron)
        if self.cfg.packet_loss > 0 and self.rng.random() < self.cfg.packet_loss:
            self.lost_batches += 1
            self.lost_spikes += len(neuron)
            return None
        return Batch(self.seq, t_start_s, t_end_s, self.total, neuron, time_s)
