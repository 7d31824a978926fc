"""Response-driven search: images bred from the images already shown, judged by the recorded responses.

The "evolved" kind of the mix (stimulus/selection.py). Every image shown and its recorded counts enter an
archive, for every neuron at once, so a trial shown for one neuron's search serves every other neuron's too. A
slot's target neuron is drawn with weights that put the budget where the model is worst (`target_weights`).
The child's two parents are drawn from the `evolve_parents` archive images with the target neuron's highest
recorded mean rate (`choose_parents`); a child is a crop of one parent pasted into the other or a blend of the
two, sometimes with a patch of a fresh pool image (new material, as XDream's immigrants). The model, where one
may choose, screens `evolve_candidates` children and the one it predicts highest is shown; it never decides
which images are parents: that is always the recorded response.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from stimulus.synthesis import from_pixels


def pixels_key(pixels: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(pixels).tobytes(), digest_size=12).hexdigest()


@dataclass
class Archived:
    """One image shown, with the recorded counts summed over its presentations."""

    pixels: np.ndarray  # (H, W, C) uint8
    label: str  # "pool#12", "evo#3", or "shown#7" for an image this chooser did not make
    generation: int
    count_sum: np.ndarray = field(default=None)  # (N,) spike counts summed over presentations
    n: int = 0


class Archive:
    """The images shown and their recorded rates, keyed by content."""

    def __init__(self, window_s: float, capacity: int = 5000):
        self.window_s = float(window_s)
        self.capacity = capacity
        self.items: dict[str, Archived] = {}
        self.made: dict[str, tuple[str, int]] = {}  # key -> (label, generation) of images this chooser made
        self.n_neurons: int | None = None

    def name(self, pixels: np.ndarray, label: str, generation: int) -> None:
        self.made[pixels_key(pixels)] = (label, generation)

    def observe(self, pixels: np.ndarray, counts: np.ndarray) -> None:
        """Record presentations: pixels (n, H, W, C) uint8, counts (n, N)."""
        counts = np.asarray(counts, np.float64)
        self.n_neurons = counts.shape[1]
        for px, c in zip(np.asarray(pixels), counts):
            key = pixels_key(px)
            item = self.items.get(key)
            if item is None:
                if len(self.items) >= self.capacity:
                    continue
                label, gen = self.made.get(key, (f"shown#{len(self.items)}", 0))
                item = self.items[key] = Archived(np.array(px, np.uint8), label, gen, np.zeros(len(c)), 0)
            item.count_sum = item.count_sum + c
            item.n += 1

    def rates(self) -> tuple[list[Archived], np.ndarray]:
        """(items, mean recorded rates (n_items, N) in spikes/s)."""
        items = list(self.items.values())
        if not items:
            return items, np.zeros((0, self.n_neurons or 0))
        return items, np.stack([it.count_sum / it.n for it in items]) / self.window_s


def choose_parents(rates_of_target: np.ndarray, n_elite: int, rng: np.random.Generator) -> tuple[int, int]:
    """Two distinct archive rows from the n_elite with the target neuron's highest recorded rate, the better
    ranked more often (weights 1/rank)."""
    order = np.argsort(-rates_of_target, kind="stable")[: max(2, n_elite)]
    w = 1.0 / np.arange(1, len(order) + 1)
    a, b = rng.choice(len(order), 2, replace=False, p=w / w.sum())
    return int(order[a]), int(order[b])


def breed(a: np.ndarray, b: np.ndarray, immigrant: np.ndarray | None, rng: np.random.Generator) -> tuple:
    """A child of uint8 images a and b (H, W, C): (pixels, how) where how says which operation made it."""
    h, w = a.shape[:2]
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    if rng.random() < 0.5:
        ch, cw = int(rng.integers(h // 4, h - h // 4 + 1)), int(rng.integers(w // 4, w - w // 4 + 1))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        child = fa.copy()
        child[y : y + ch, x : x + cw] = fb[y : y + ch, x : x + cw]
        how = "crop"
    else:
        alpha = float(rng.uniform(0.3, 0.7))
        child = alpha * fa + (1 - alpha) * fb
        how = "blend"
    if immigrant is not None:
        ch, cw = max(2, h // 4), max(2, w // 4)
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        child[y : y + ch, x : x + cw] = immigrant[y : y + ch, x : x + cw]
        how += "+patch"
    return np.clip(np.rint(child), 0, 255).astype(np.uint8), how


def target_weights(items_rates: np.ndarray, predictor, pixels: np.ndarray | None, n_neurons: int) -> np.ndarray:
    """Per-neuron share of the evolved slots: where the model is worst on the images already shown.

    Without a model every neuron weighs the same. With one, a neuron's weight is 1 - r (the correlation of the
    members' mean prediction with the recorded rates over the archive, floored at 0) plus the members'
    disagreement (their standard deviation over their mean, averaged over the archive), plus a small floor so
    no neuron is starved."""
    if predictor is None or pixels is None or len(pixels) < 3:
        return np.full(n_neurons, 1.0 / n_neurons)
    with torch.no_grad():
        rates = torch.cat([predictor.rates(from_pixels(pixels[s : s + 64])) for s in range(0, len(pixels), 64)], 1)
    rates = rates.double().numpy()  # (M, n, N)
    mean = rates.mean(0)
    p, t = mean - mean.mean(0), items_rates - items_rates.mean(0)
    denom = np.sqrt((p**2).sum(0) * (t**2).sum(0))
    r = np.where(denom > 1e-12, (p * t).sum(0) / np.where(denom > 1e-12, denom, 1.0), 0.0)
    spread = (rates.std(0) / (np.abs(mean) + 1.0)).mean(0)
    w = np.clip(1.0 - r, 0.0, 2.0) + spread + 0.05
    return w / w.sum()
