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
