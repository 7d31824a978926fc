"""The virtual cortex's ground truth: a population of neurons, each a fixed function of the image.

First version: oriented-energy (complex-cell) units with Gaussian receptive
fields and divisive normalization across the population.

Interface (used by the recording system, benchmarks and the session summary):
    Population(cfg: PopulationConfig, size_px, colour)
    .n_neurons, .baseline_hz (N,)
    .rates(images) -> (B, N) spikes/s, images uint8 (B, H, W, C) or float in [0, 1]
    .describe() -> list of dicts, one per neuron
"""
from __future__ import annotations

import numpy as np

from acquisition.config import PopulationConfig


def _as_float(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


class Population:
    def __init__(self, cfg: PopulationConfig, size_px: int, colour: bool):
        self.cfg = cfg
        self.size = size_px
        rng = np.random.default_rng(cfg.seed)
        n = cfg.n_neurons
        self.n_neurons = n
        self.baseline_hz = rng.uniform(*cfg.baseline_hz, n)
        self.peak_hz = rng.uniform(*cfg.peak_hz, n)
        yy, xx = np.mgrid[0:size_px, 0:size_px].astype(np.float32)
        self.centre = rng.uniform(0.3, 0.7, (n, 2)) * size_px
        self.rf_sigma = rng.uniform(*cfg.rf_size_frac, n) * size_px / 4
        self.orientation = rng.uniform(0, np.pi, n)
        self.wavelength = rng.uniform(0.15, 0.35, n) * size_px
        filters = np.zeros((n, 2, size_px, size_px), np.float32)
        for i in range(n):
            cy, cx = self.centre[i]
            g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * self.rf_sigma[i] ** 2))
            u = (xx - cx) * np.cos(self.orientation[i]) + (yy - cy) * np.sin(self.orientation[i])
            k = 2 * np.pi / self.wavelength[i]
            filters[i, 0] = g * np.cos(k * u)
            filters[i, 1] = g * np.sin(k * u)
            filters[i] -= filters[i].mean(axis=(1, 2), keepdims=True)
            filters[i] /= np.linalg.norm(filters[i, 0]) + 1e-9
        self.filters = filters.reshape(n * 2, -1)
        # Scale drive so typical natural patches span the rate range.
        self._scale = None

    def _drive(self, images: np.ndarray) -> np.ndarray:
        x = _as_float(images)
        grey = x.mean(axis=-1) - 0.5
        resp = grey.reshape(len(x), -1) @ self.filters.T  # (B, 2N)
        energy = resp.reshape(len(x), -1, 2)
        return np.sqrt((energy ** 2).sum(-1))

    def rates(self, images: np.ndarray) -> np.ndarray:
        drive = self._drive(images)
        if self._scale is None:
            probe = np.random.default_rng(self.cfg.seed + 1).random((64, self.size, self.size, 3), np.float32)
            self._scale = np.percentile(self._drive(probe), 95, axis=0) + 1e-6
        d = drive / self._scale
        norm = 1.0 + self.cfg.normalization_strength * d.mean(axis=1, keepdims=True)
        r = d ** 2 / (norm + d ** 2)
        return self.baseline_hz + (self.peak_hz - self.baseline_hz) * r

    def describe(self) -> list[dict]:
        return [{"neuron": i, "type": "oriented", "rf_centre_px": self.centre[i].tolist(),
                 "rf_sigma_px": float(self.rf_sigma[i]), "orientation_rad": float(self.orientation[i])}
                for i in range(self.n_neurons)]
