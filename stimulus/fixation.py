"""Fixation sources: simulated (with configurable breaks) and the interface a real eye tracker fills."""
from __future__ import annotations

import numpy as np


class AlwaysFixating:
    """No eye tracking: every trial is held (e.g. anaesthetised preparations)."""

    def start_trial(self, trial_id: int, start_s: float, duration_s: float) -> None:
        pass

    def holding(self, now_s: float) -> bool:
        return True


class SimulatedFixation:
    """Breaks fixation in a trial with probability `break_probability`, at a uniform time within it."""

    def __init__(self, break_probability: float, seed: int = 0):
        self.p = float(break_probability)
        self.rng = np.random.default_rng(seed)
        self.break_at = float("inf")

    def start_trial(self, trial_id: int, start_s: float, duration_s: float) -> None:
        if self.rng.random() < self.p:
            self.break_at = start_s + self.rng.uniform(0.0, duration_s)
        else:
            self.break_at = float("inf")

    def holding(self, now_s: float) -> bool:
        return now_s < self.break_at
