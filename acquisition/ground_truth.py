"""What the virtual cortex knows that a real one never tells: true rates and the noise ceiling.

The noise ceiling of a neuron is the best correlation any model could reach
between its predictions and the neuron's observed spike counts, when the
prediction is the neuron's true rate: noise in the counts caps it below one.
For counts c_j in a response window with mean m_j (affine in the true rate
R_j) and variance v_j over images j,

    ceiling = corr(c, R) = sqrt(Var_j(m) / (Var_j(m) + mean_j(v) / n_repeats))

(counts averaged over n_repeats presentations). Means and variances come from
the spiking model's analytic time course and noise model; simulate_counts runs
the real spiking model so the two can be checked against each other.
"""

from __future__ import annotations

import numpy as np

from acquisition.config import SpikingConfig
from acquisition.spiking import SpikingModel


def noise_ceiling(
    population,
    spiking_cfg: SpikingConfig,
    images: np.ndarray,
    window_s: tuple[float, float] = (0.05, 0.2),
    seed: int = 1,
    n_repeats: int = 1,
) -> np.ndarray:
    """(N,) expected correlation between counts in window_s (seconds after onset) and the true rate.

    `seed` is the spiking model's seed (per-neuron latencies depend on it); the
    virtual cortex process uses population seed + 1. Drift and lost units are
    not part of the ceiling: they change the neuron, not the noise.
    """
    rates = population.rates(images)
    model = SpikingModel(spiking_cfg, population.baseline_hz, seed)
    mean = model.expected_counts(rates, *window_s)
    var = model.count_variance(rates, *window_s)
    signal = mean.var(0)
    noise = var.mean(0) / max(1, n_repeats)
    with np.errstate(invalid="ignore", divide="ignore"):
        ceiling = np.sqrt(signal / (signal + noise))
    return np.where(signal > 0, ceiling, 0.0)


def simulate_counts(
    population,
    spiking_cfg: SpikingConfig,
    images: np.ndarray,
    window_s: tuple[float, float] = (0.05, 0.2),
    seed: int = 1,
    n_repeats: int = 1,
    spacing_s: float = 0.5,
    rates: np.ndarray | None = None,
) -> np.ndarray:
    """(n_repeats, B, N) spike counts of isolated presentations, from the real spiking model on a virtual clock."""
    if rates is None:
        rates = population.rates(images)
    model = SpikingModel(spiking_cfg, population.baseline_hz, seed)
    n_img = len(rates)
    onsets = (np.arange(n_repeats * n_img) + 0.5) * spacing_s
    neurons, times = [], []
    for k, t in enumerate(onsets):  # one onset at a time, as a session delivers them
        model.add_onset(t, rates[k % n_img])
        nrn, tim = model.advance(t + spacing_s)
        neurons.append(nrn)
        times.append(tim)
    neuron, time_s = np.concatenate(neurons), np.concatenate(times)
    idx = np.floor(time_s / spacing_s - 0.5).astype(np.int64)  # which presentation each spike follows
    rel = time_s - onsets[np.clip(idx, 0, len(onsets) - 1)]
    inside = (idx >= 0) & (rel >= window_s[0]) & (rel < window_s[1])
    flat = np.zeros((len(onsets), population.n_neurons))
    np.add.at(flat, (idx[inside], neuron[inside].astype(np.int64)), 1)
    return flat.reshape(n_repeats, n_img, population.n_neurons)


def true_rate_table(population, images: np.ndarray) -> list[dict]:
    """One dict per neuron: its type and the spread of its true rates over `images` (for session summaries)."""
    rates = population.rates(images)
    out = []
    for i, d in enumerate(population.describe()):
        r = rates[:, i]
        out.append(
            {
                "neuron": i,
                "type": d["type"],
                "baseline_hz": float(population.baseline_hz[i]),
                "median_hz": float(np.median(r)),
                "p95_hz": float(np.percentile(r, 95)),
                "max_hz": float(r.max()),
                "min_hz": float(r.min()),
            }
        )
    return out
