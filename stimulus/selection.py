"""Choosing the next images.

Interface used by the model worker:
    ImageChooser(cfg: SelectionConfig, pools: Pools, seed)
    .choose(trial_id, n_images, predictor | None, deadline_s | None) -> list[Choice]
deadline_s is a time.perf_counter() value by which the answer is due (None: no deadline).

First version: uniform random draws from the training pool.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stimulus.pools import Pools
from stimulus.selection_config import SelectionConfig


@dataclass
class Choice:
    pixels: np.ndarray  # (H, W, C) uint8
    reason: str  # e.g. "random pool#123"


class ImageChooser:
    def __init__(self, cfg: SelectionConfig, pools: Pools, seed: int = 0):
        self.cfg = cfg
        self.pools = pools
        self.rng = np.random.default_rng(seed)

    def choose(self, trial_id: int, n_images: int, predictor=None, deadline_s: float | None = None) -> list[Choice]:
        idx = self.rng.choice(len(self.pools.train), n_images, replace=False)
        return [Choice(self.pools.train[i], f"random pool#{i}") for i in idx]
