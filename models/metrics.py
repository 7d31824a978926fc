"""Accuracy measures, per neuron, on (samples, neurons) arrays or tensors."""

from __future__ import annotations

import numpy as np
import torch


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, np.float64)
    return x[:, None] if x.ndim == 1 else x


def correlation(pred, target) -> np.ndarray:
    """Pearson r per column; 0 where either side is constant (a flat prediction explains nothing)."""
    p, t = _np(pred), _np(target)
    p = p - p.mean(0)
    t = t - t.mean(0)
    denom = np.sqrt((p**2).sum(0) * (t**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p * t).sum(0) / denom
    return np.where(denom > 1e-12, r, 0.0)


def r2(pred, target) -> np.ndarray:
    """Squared correlation per column (the paper's r^2 between a model and its teacher)."""
    return correlation(pred, target) ** 2


def poisson_nll(pred_counts, counts) -> float:
    """Mean Poisson negative log-likelihood (constant log(k!) term left out)."""
    mu, k = _np(pred_counts) + 1e-9, _np(counts)
    return float((mu - k * np.log(mu)).mean())


def held_out_quality(pred, observed, n_shuffles: int = 200, seed: int = 0) -> dict:
    """How far a model's predictions (n, N) beat chance on held-out observations (n, N), e.g. spike counts.

    r: the Pearson r per neuron, averaged over neurons. chance_r: the 95th percentile of the same figure with the
    presentations shuffled (one permutation for all neurons, so their correlations are kept), i.e. what a model
    with no skill reaches on these n presentations by luck. Returns {"r", "chance_r", "n"} (NaNs for n < 3)."""
    p, t = _np(pred), _np(observed)
    n = p.shape[0]
    if n < 3:
        return {"r": float("nan"), "chance_r": float("nan"), "n": int(n)}

    def z(x):
        x = x - x.mean(0)
        sd = np.sqrt((x**2).mean(0))
        return np.where(sd > 1e-12, x / np.where(sd > 1e-12, sd, 1.0), 0.0)

    zp, zt = z(p), z(t)
    r = float(((zp * zt).mean(0)).mean())
    rng = np.random.default_rng(seed)
    shuffled = [float(((zp[rng.permutation(n)] * zt).mean(0)).mean()) for _ in range(n_shuffles)]
    return {"r": r, "chance_r": float(np.percentile(shuffled, 95)), "n": int(n)}
