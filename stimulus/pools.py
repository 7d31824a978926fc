"""Image pools: natural patches cut from the images that ship with scikit-image, plus "gaudy" versions.

Deterministic in the rig's [images] section, so every process builds the same
pools without shipping them.

The held-out test set never shares a pixel with the training pool, and it is
not only grey: every colour photograph is split into a training region and a
held-out strip (its right quarter, or bottom quarter for portrait images), and
test patches are cut from the strips (three quarters of the test set in a
colour rig) and from grey photographs that the training pool never uses.
Crops lie wholly inside their region, so no test patch overlaps a training patch.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as skdata

from stimulus.config import ImagesConfig

# Natural colour photographs shipped with scikit-image (no download needed), split train / test by region.
COLOUR_SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "retina")
# Whole images used only for training (textures, a synthetic colour wheel, a deep-field photograph).
TRAIN_ONLY_SOURCES = ("colorwheel", "hubble_deep_field", "brick", "grass", "gravel")
# Whole images used only for testing (grey photographs).
TEST_ONLY_SOURCES = ("camera", "coins", "moon", "page", "text", "clock", "horse")
HELD_OUT_FRACTION = 0.25  # of each colour photograph, as a strip along its long side
TEST_COLOUR_SHARE = 0.75  # of the test set cut from held-out colour strips (colour rigs)

# Kept for callers that list sources: everything the training pool may draw from, and the test-only images.
TRAIN_SOURCES = COLOUR_SOURCES + TRAIN_ONLY_SOURCES
TEST_SOURCES = TEST_ONLY_SOURCES


@dataclass(frozen=True)
class Pools:
    train: np.ndarray  # (P, H, W, C) uint8, the pool that selection and training draw from
    train_kind: tuple  # "natural" or "gaudy", per train image
    test: np.ndarray  # (T, H, W, C) uint8, held out: never shown for training


@lru_cache(maxsize=None)
def _source(name: str) -> np.ndarray | None:
    loader = getattr(skdata, name, None)
    if loader is None:
        return None
    try:
        img = loader()
    except Exception:  # a loader that needs an optional download: skip it
        return None
    if isinstance(img, tuple):
        img = img[0]
    img = np.asarray(img)
    if img.dtype == bool:  # binary images (e.g. 'horse'): bool has no subtraction
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = (255 * (img - img.min()) / max(float(img.max() - img.min()), 1e-9)).astype(np.uint8)
    img.setflags(write=False)
    return img


def split_regions(img: np.ndarray, held_out: float = HELD_OUT_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """(training region, held-out strip) of one photograph: disjoint views, the strip along the long side's end."""
    h, w = img.shape[:2]
    if w >= h:
        cut = int(round(w * (1 - held_out)))
        return img[:, :cut], img[:, cut:]
    cut = int(round(h * (1 - held_out)))
    return img[:cut], img[cut:]


def gaudy(images: np.ndarray) -> np.ndarray:
    """Each colour channel binarized at its mean (per image), as in Cowley et al."""
    x = images.astype(np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return np.where(x > mean, 255, 0).astype(np.uint8)


def _resize(crop: np.ndarray, size: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (size, size, 3) float32, antialiased (area-like) bilinear: fast enough for
    thousands of crops at start-up in every process."""
    t = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32)).permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return t[0].permute(1, 2, 0).numpy()


def cut_patches(sources: list[np.ndarray], n: int, size: int, colour: bool, rng: np.random.Generator) -> np.ndarray:
    """n square crops, each wholly inside one of `sources`, resized to size x size."""
    out = np.zeros((n, size, size, 3 if colour else 1), np.uint8)
    for i in range(n):
        src = sources[rng.integers(len(sources))]
        h, w = src.shape[:2]
        short = min(h, w)
        lo = max(8, min(short, max(16, max(h, w) // 8)))
        hi = max(lo, min(short, max(h, w) // 2))
        side = int(rng.integers(lo, hi + 1))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = _resize(src[y:y + side, x:x + side], size)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if not colour:
            crop = crop @ np.array([0.299, 0.587, 0.114], np.float32)
            crop = crop[..., None]
        out[i] = np.clip(np.rint(crop), 0, 255).astype(np.uint8)
    return out


def source_regions() -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(training regions, held-out colour strips, test-only grey images), skipping unavailable images."""
    train, held_colour, test_grey = [], [], []
    for name in COLOUR_SOURCES:
        img = _source(name)
        if img is not None:
            a, b = split_regions(img)
            train.append(a)
            held_colour.append(b)
    train += [s for s in (_source(n) for n in TRAIN_ONLY_SOURCES) if s is not None]
    test_grey += [s for s in (_source(n) for n in TEST_ONLY_SOURCES) if s is not None]
    return train, held_colour, test_grey


@lru_cache(maxsize=4)
def make_pools(cfg: ImagesConfig) -> Pools:
    rng = np.random.default_rng(cfg.seed)
    train_src, held_colour, test_grey = source_regions()
    n_gaudy = int(round(cfg.pool_size * cfg.gaudy_share))
    natural = cut_patches(train_src, cfg.pool_size - n_gaudy, cfg.size_px, cfg.colour, rng)
    gaudy_imgs = gaudy(cut_patches(train_src, n_gaudy, cfg.size_px, cfg.colour, rng))
    colour_share = TEST_COLOUR_SHARE if cfg.colour else 0.5
    n_colour = int(round(cfg.test_size * colour_share)) if held_colour else 0
    parts = [cut_patches(held_colour, n_colour, cfg.size_px, cfg.colour, rng)] if n_colour else []
    if cfg.test_size - n_colour:
        parts.append(cut_patches(test_grey or held_colour, cfg.test_size - n_colour, cfg.size_px, cfg.colour, rng))
    test = np.concatenate(parts)
    # Interleave colour and grey test patches so any prefix of the test set has both.
    test = test[np.random.default_rng(cfg.seed + 1).permutation(len(test))]
    kinds = ("natural",) * len(natural) + ("gaudy",) * n_gaudy
    return Pools(np.concatenate([natural, gaudy_imgs]), kinds, test)
