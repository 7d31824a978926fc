"""Bounded storage of (image, response) pairs for online training."""

from __future__ import annotations

import numpy as np
import torch


class ResponseBuffer:
    """Keeps the most recent `capacity` presentations: images as uint8, responses as rates (spikes/s).

    Memory is bounded: a ring buffer, allocated once.
    """

    def __init__(self, capacity: int, image_shape: tuple[int, int, int], n_neurons: int):
        self.capacity = capacity
        self.images = np.zeros((capacity, *image_shape), np.uint8)
        self.rates = np.zeros((capacity, n_neurons), np.float32)
        self.n_total = 0

    def __len__(self) -> int:
        return min(self.n_total, self.capacity)

    def add(self, images: np.ndarray, counts: np.ndarray, window_s: float) -> None:
        for img, c in zip(images, counts):
            i = self.n_total % self.capacity
            self.images[i] = img
            self.rates[i] = np.asarray(c, np.float32) / window_s
            self.n_total += 1

    def tensors(self, index: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (n, C, H, W) float in [0, 1], rates (n, N)) for the stored rows or `index` of them."""
        n = len(self)
        idx = np.arange(n) if index is None else index
        imgs = torch.from_numpy(self.images[idx]).permute(0, 3, 1, 2).float() / 255.0
        return imgs, torch.from_numpy(self.rates[idx])
