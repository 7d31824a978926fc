"""The virtual cortex's ground truth: a population of neurons, each a fixed function of the image.

The neuron types live in acquisition/neurons.py; this module draws the mix
from the rig file (type_shares, seed), calibrates every unit's gain on natural
patches, applies divisive normalization across the population and maps the
result to spikes/s:

    d_i  = drive_i / (95th percentile of drive_i over natural patches)   (signed; the
           percentile is floored at a fifth of the median over units of the same type)
           selective types first lose a threshold, their (1 - sparseness) quantile over the natural
           patches (rectified), and are divided by their largest drive over the patches instead
    e_i  = max(d_i, 0),  n_i = max(-d_i, 0),  pool = mean_j min(e_j, 3)^2
    E_i  = e_i^2 / (c50^2 + e_i^2 + normalization_strength * pool)
    S_i  = min(1, s_i * pool / (c50^2 + pool) + n_i^2 / (c50^2 + n_i^2))
    rate = baseline_i * (1 - S_i) + (peak_i - baseline_i) * E_i

Custom neuron types (PopulationConfig.custom) return spikes/s directly and come after the built-in ones.
What the model means for a neuron: docs/virtual-cortex.md.

    .rates(images) -> (B, N) spikes/s, images uint8 (B, H, W, C) or float in [0, 1]
    .n_neurons, .baseline_hz (N,), .peak_hz (N,), .types, .describe() (one dict per neuron)
    .rf_centre_yx_px (N, 2), .rf_diameter_px (N,): NaN for custom neurons (receptive field unknown)
    sparseness(rates, baseline_hz) -> (N,) share of images driving each neuron above half its maximum
"""

from __future__ import annotations

import importlib
from typing import Callable

import numpy as np
import torch

from acquisition.config import NEURON_TYPES, PopulationConfig
from acquisition.neurons import GROUP_CLASSES, FeatureBank, RandomCNNUnits, natural_patches

POOL_CAP = 3.0
CHUNK = 64  # images per forward pass: bounds memory (the FFT bank holds ~B*24*P*P complex values)


def _as_float(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


def load_custom(path: str) -> Callable[[np.ndarray], np.ndarray]:
    """Import "package.module:function" (a rig file names custom neuron types this way)."""
    module_name, _, attr = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"custom neuron type {path!r} cannot be loaded: {err}") from None
    if not callable(fn):
        raise ValueError(f"custom neuron type {path!r} is not callable")
    return fn


def split_counts(n: int, shares: dict[str, float]) -> dict[str, int]:
    """Integer counts per type that sum to n, by largest remainder (deterministic)."""
    total = sum(shares.values())
    names = [t for t in NEURON_TYPES if shares.get(t, 0) > 0]
    exact = {t: n * shares[t] / total for t in names}
    counts = {t: int(np.floor(v)) for t, v in exact.items()}
    rest = n - sum(counts.values())
    for t in sorted(names, key=lambda t: (-(exact[t] - counts[t]), NEURON_TYPES.index(t)))[:rest]:
        counts[t] += 1
    return counts


class Population:
    """The rig file's population (the module docstring says what it computes); calibrated on construction."""

    def __init__(self, cfg: PopulationConfig, size_px: int, colour: bool, calibration_images: np.ndarray | None = None):
        self.cfg = cfg
        self.size = size_px
        self.colour = colour
        rng = np.random.default_rng(cfg.seed)
        self.bank = FeatureBank(size_px)
        self.groups = []
        if cfg.n_neurons > 0:
            for t, count in split_counts(cfg.n_neurons, cfg.type_shares).items():
                if count == 0:
                    continue
                cls = GROUP_CLASSES[t]
                extra = {"seed": cfg.seed + 7919} if cls is RandomCNNUnits else {}
                self.groups.append(cls(count, size_px, colour, rng, cfg.rf_size_frac, self.bank, **extra))
        self.n_builtin = sum(g.n for g in self.groups)
        self.types = [g.type_name for g in self.groups for _ in range(g.n)]
        self.custom_fns = [load_custom(p) for p in cfg.custom]
        nb = self.n_builtin
        self.peak_hz = rng.uniform(*cfg.peak_hz, nb)
        self.suppression_index = rng.uniform(*cfg.suppression, nb)
        builtin_baseline = rng.uniform(*cfg.baseline_hz, nb)
        if calibration_images is None:
            calibration_images = natural_patches(cfg.calibration_images, size_px, colour, cfg.seed + 104729)
        self._scale = torch.ones(nb)
        # Selective units: a threshold at their (1 - sparseness) quantile over the natural calibration patches.
        self._selective = torch.tensor([g.selective for g in self.groups for _ in range(g.n)], dtype=torch.bool)
        self._threshold = torch.zeros(nb)
        if nb:
            drive = self._builtin_drive(calibration_images)
            if self._selective.any():
                sel = self._selective
                self._threshold[sel] = torch.quantile(drive[:, sel], 1.0 - cfg.sparseness, dim=0)
                drive = self._thresholded(drive)
            pos = torch.clamp(drive, min=0)
            scale = torch.quantile(pos, 0.95, dim=0)
            fallback = pos.amax(0)
            # Selective units: the best natural patch is their unit of drive (their 95th percentile is zero).
            scale = torch.where(self._selective, fallback, scale)
            # A unit that natural patches never drive (rare) keeps its largest response as its unit.
            scale = torch.where(scale > 1e-9, scale, torch.where(fallback > 1e-9, fallback, torch.ones_like(scale)))
            # A unit whose preferred feature is rare in natural images (a green-hue unit, say)
            # gets a tiny scale; flooring it at a fifth of its type's median keeps it from
            # responding to everything slightly green as to an optimal stimulus.
            types = np.array(self.types)
            for t in set(self.types):
                sel = torch.as_tensor(types == t)
                scale[sel] = torch.clamp(scale[sel], min=0.2 * float(scale[sel].median()))
            self._scale = scale
        self._builtin_baseline = builtin_baseline
        # Custom neurons: their rate for a mean-grey image is their baseline.
        custom_counts, custom_base = [], []
        grey = np.full((1, size_px, size_px, 3 if colour else 1), 0.5, np.float32)
        for fn, path in zip(self.custom_fns, cfg.custom):
            r = self._call_custom(fn, path, grey)
            custom_counts.append(r.shape[1])
            custom_base.append(r[0])
        self.custom_counts = custom_counts
        self.n_neurons = nb + sum(custom_counts)
        self.types += [f"custom:{p}" for p, c in zip(cfg.custom, custom_counts) for _ in range(c)]
        self.baseline_hz = np.concatenate([builtin_baseline] + custom_base).astype(np.float64)
        self.peak_hz = np.concatenate([self.peak_hz] + [np.full(c, np.nan) for c in custom_counts])
        nan2 = [np.full((c, 2), np.nan) for c in custom_counts]
        self.rf_centre_yx_px = (
            np.concatenate([g.centre_yx for g in self.groups] + nan2) if self.n_neurons else np.zeros((0, 2))
        )
        self.rf_diameter_px = np.concatenate(
            [g.diameter_px for g in self.groups] + [np.full(c, np.nan) for c in custom_counts]
        )

    # ------------------------------------------------------------------ internals

    def _to_tensor(self, images: np.ndarray) -> torch.Tensor:
        x = _as_float(images)
        if x.ndim != 4 or x.shape[1] != self.size or x.shape[2] != self.size:
            raise ValueError(f"images must be (B, {self.size}, {self.size}, C), got {x.shape}")
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
        if t.shape[1] == 1:
            t = t.expand(-1, 3, -1, -1)
        elif t.shape[1] != 3:
            raise ValueError(f"images must have 1 or 3 channels, got {t.shape[1]}")
        return t.contiguous()

    def _builtin_drive(self, images: np.ndarray) -> torch.Tensor:
        out = []
        need_amp = any(g.needs_amp for g in self.groups)
        need_blob = any(g.needs_blob for g in self.groups)
        with torch.no_grad():
            for a in range(0, len(images), CHUNK):
                rgb = self._to_tensor(images[a : a + CHUNK])
                feats = self.bank.compute(rgb, need_amp, need_blob)
                out.append(torch.cat([g.drive(feats) for g in self.groups], 1))
        return torch.cat(out, 0) if out else torch.zeros(0, self.n_builtin)

    def _thresholded(self, drive: torch.Tensor) -> torch.Tensor:
        """Selective units' drive less their threshold, rectified; other units' unchanged."""
        if not self._selective.any():
            return drive
        return torch.where(self._selective, torch.clamp(drive - self._threshold, min=0.0), drive)

    def _call_custom(self, fn, path: str, x: np.ndarray) -> np.ndarray:
        r = np.asarray(fn(x), np.float64)
        if r.ndim != 2 or r.shape[0] != len(x):
            raise ValueError(f"custom neuron type {path!r} returned shape {r.shape}, expected ({len(x)}, n)")
        return np.maximum(r, 0.0)

    # ------------------------------------------------------------------ public

    def normalized_drive(self, images: np.ndarray) -> np.ndarray:
        """(B, n_builtin) calibrated, signed drive (1 = a 95th-percentile natural patch)."""
        return (self._thresholded(self._builtin_drive(images)) / self._scale).numpy().astype(np.float64)

    def rates(self, images: np.ndarray) -> np.ndarray:
        """(B, N) true rates in spikes/s."""
        images = np.asarray(images)
        parts = []
        if self.n_builtin:
            d = self.normalized_drive(images)
            c2 = self.cfg.semi_saturation**2
            e = np.maximum(d, 0.0)
            neg = np.maximum(-d, 0.0)
            # Each unit's share of the normalization pool saturates (drive 3 = three times a
            # 95th-percentile natural patch), so no single unit can silence the population.
            pool = (np.minimum(e, POOL_CAP) ** 2).mean(1, keepdims=True)
            excitation = e**2 / (c2 + e**2 + self.cfg.normalization_strength * pool)
            suppression = np.minimum(1.0, self.suppression_index * pool / (c2 + pool) + neg**2 / (c2 + neg**2))
            base = self._builtin_baseline
            parts.append(base * (1 - suppression) + (self.peak_hz[: self.n_builtin] - base) * excitation)
        if self.custom_fns:
            x = _as_float(images)
            for fn, path, c in zip(self.custom_fns, self.cfg.custom, self.custom_counts):
                r = self._call_custom(fn, path, x)
                if r.shape[1] != c:
                    raise ValueError(f"custom neuron type {path!r} changed its number of neurons ({c} -> {r.shape[1]})")
                parts.append(r)
        return np.concatenate(parts, 1) if parts else np.zeros((len(images), 0))

    def describe(self) -> list[dict]:
        out = []
        i = 0
        for g in self.groups:
            for j in range(g.n):
                out.append(
                    {
                        "neuron": i,
                        "type": g.type_name,
                        "rf_centre_px": [float(v) for v in g.centre_yx[j]],  # (row, col)
                        "rf_diameter_px": float(g.diameter_px[j]),
                        "rf_sigma_px": float(g.diameter_px[j] / 4),
                        "baseline_hz": float(self.baseline_hz[i]),
                        "peak_hz": float(self.peak_hz[i]),
                        "suppression_index": float(self.suppression_index[i]),
                        **g.describe(j),
                    }
                )
                i += 1
        for path, c in zip(self.cfg.custom, self.custom_counts):
            for j in range(c):
                out.append(
                    {
                        "neuron": i,
                        "type": "custom",
                        "function": path,
                        "output": j,
                        "baseline_hz": float(self.baseline_hz[i]),
                    }
                )
                i += 1
        return out


def sparseness(rates: np.ndarray, baseline_hz: np.ndarray) -> np.ndarray:
    """(N,) share of the images (rows of `rates`, (B, N) spikes/s) that drive each neuron above half its maximum:
    rate - baseline > 0.5 * (max rate - baseline). Over natural images, low values mean a selective neuron."""
    rates = np.asarray(rates, np.float64)
    evoked = rates - np.asarray(baseline_hz, np.float64)[None]
    top = evoked.max(0)
    return np.where(top > 0, (evoked > 0.5 * top[None]).mean(0), 0.0)


def population_size(cfg: PopulationConfig, size_px: int, colour: bool) -> int:
    """How many neurons Population(cfg, size_px, colour) will have, without calibrating it.

    Built-in neurons plus every output of each custom function (which may return several).
    """
    grey = np.full((1, size_px, size_px, 3 if colour else 1), 0.5, np.float32)
    return cfg.n_neurons + sum(np.asarray(load_custom(p)(grey)).reshape(1, -1).shape[1] for p in cfg.custom)
