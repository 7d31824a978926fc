"""Clock alignment: map the presenter clock onto the acquisition clock (offset + drift).

Fitted by least squares on pairs (onset flip time in the presenter clock, the
same onset's event code time in the acquisition clock); the residual says how
well the two clocks agree (on a rig: TTL latency jitter).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClockFit:
    """acquisition_s = offset_s + rate * presenter_s, and how well the pairs fit it."""

    offset_s: float
    rate: float  # acquisition seconds per presenter second
    residual_rms_s: float
    residual_max_s: float
    n_pairs: int

    @property
    def drift_ppm(self) -> float:
        return (self.rate - 1.0) * 1e6

    def to_acquisition(self, presenter_s):
        return self.offset_s + self.rate * np.asarray(presenter_s)


def fit_clock(presenter_s: np.ndarray, acquisition_s: np.ndarray) -> ClockFit:
    """Least-squares fit over paired times (one pair: offset only); ValueError for no pairs or unequal lengths."""
    p = np.asarray(presenter_s, np.float64)
    a = np.asarray(acquisition_s, np.float64)
    if len(p) != len(a):
        raise ValueError(f"{len(p)} presenter times but {len(a)} acquisition times")
    if len(p) == 0:
        raise ValueError("no time pairs to align")
    if len(p) == 1 or np.ptp(p) == 0:
        offset, rate = float(a[0] - p[0]), 1.0
    else:
        # Centre for numerical stability (clocks may read 1e5 s).
        pm, am = p.mean(), a.mean()
        rate = float(np.sum((p - pm) * (a - am)) / np.sum((p - pm) ** 2))
        offset = float(am - rate * pm)
    resid = a - (offset + rate * p)
    return ClockFit(offset, rate, float(np.sqrt(np.mean(resid**2))), float(np.max(np.abs(resid))), len(p))
