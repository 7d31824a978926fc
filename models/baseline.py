"""The baseline model: ridge regression of each neuron's rate on fixed image features.

It is what the compact CNNs must beat. Features: the image downsampled to 8x8
per channel, its square (a crude energy term), and local contrast. Members of
the ensemble are fitted on bootstrap resamples of the presentations, so they
disagree where the data are thin.

Implements the online-model interface used by the model worker:
    add_responses(images_uint8, counts, window_s); train(steps); snapshot() -> predictor
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from models.config import ModelConfig
from models.data import ResponseBuffer


def baseline_features(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) float in [0, 1] -> (B, D) features, differentiable."""
    x = images - 0.5
    small = F.adaptive_avg_pool2d(x, 8)
    local = F.adaptive_avg_pool2d((x - F.avg_pool2d(x, 3, 1, 1)) ** 2, 4)
    ones = torch.ones(images.shape[0], 1, dtype=images.dtype, device=images.device)
    return torch.cat([small.flatten(1), (small**2).flatten(1), 10 * local.flatten(1), ones], 1)


@dataclass
class RidgePredictor:
    """A frozen snapshot: weights (members, D, neurons)."""

    version: int
    weights: torch.Tensor

    @property
    def n_members(self) -> int:
        return self.weights.shape[0]

    @property
    def n_neurons(self) -> int:
        return self.weights.shape[2]

    def rates(self, images: torch.Tensor, neurons: Sequence[int] | None = None) -> torch.Tensor:
        w = self.weights if neurons is None else self.weights[:, :, list(neurons)]
        feats = baseline_features(images.to(w.dtype))
        return F.softplus(torch.einsum("bd,mdn->mbn", feats, w), beta=0.2)


class RidgeBaseline:
    """The baseline online model (the module docstring)."""

    def __init__(self, cfg: ModelConfig, n_neurons: int, image_shape: tuple[int, int, int]):
        self.cfg = cfg
        self.n_neurons = n_neurons
        self.buffer = ResponseBuffer(cfg.max_stored_responses, image_shape, n_neurons)
        self.rng = np.random.default_rng(cfg.seed)
        h, w, c = image_shape
        d = baseline_features(torch.zeros(1, c, h, w)).shape[1]
        self.weights = torch.zeros(cfg.ensemble_size, d, n_neurons)
        self.weights[:, -1, :] = 5.0
        self.version = 0
        self._fitted_n = 0
        self.steps_done = 0

    def add_responses(self, images: np.ndarray, counts: np.ndarray, window_s: float) -> None:
        self.buffer.add(images, counts, window_s)

    def train(self, steps: int) -> None:
        """Refit when new data arrived (a closed-form fit: `steps` only says whether to work)."""
        if steps <= 0 or len(self.buffer) == self._fitted_n or len(self.buffer) < 5:
            return
        images, rates = self.buffer.tensors()
        feats = baseline_features(images).double()
        y = rates.double()
        n, d = feats.shape
        eye = torch.eye(d, dtype=torch.float64) * self.cfg.ridge_alpha
        eye[-1, -1] = 0.0  # no penalty on the intercept
        for m in range(self.cfg.ensemble_size):
            idx = torch.as_tensor(self.rng.integers(0, n, n)) if m > 0 else torch.arange(n)
            x, t = feats[idx], y[idx]
            self.weights[m] = torch.linalg.solve(x.T @ x + eye, x.T @ t).float()
        self._fitted_n = len(self.buffer)
        self.steps_done += 1
        self.version += 1

    def snapshot(self) -> RidgePredictor:
        return RidgePredictor(self.version, self.weights.clone())

    def weights_state(self) -> dict:
        """What a checkpoint keeps (tensors and numbers only: torch.load(weights_only=True) reads it)."""
        return {"weights": self.weights.clone(), "version": self.version, "steps_done": self.steps_done}

    def load_weights_state(self, state: dict) -> None:
        self.weights = state["weights"].clone()
        self.version, self.steps_done = int(state["version"]), int(state["steps_done"])
