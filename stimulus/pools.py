"""Image pools: natural patches cut from the images that ship with scikit-image, plus "gaudy" versions.

Deterministic in the rig's [images] section, so every process builds the same
pools without shipping them. The held-out test set is cut from source images
that the training pool never uses, so test accuracy is never inflated by
overlapping crops.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from skimage import data as skdata
from skimage.transform import resize

from stimulus.config import ImagesConfig

# Natural photographs shipped with scikit-image (no download needed).
TRAIN_SOURCES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                 "retina", "colorwheel", "cat", "motorcycle_left", "brick", "grass", "gravel")
TEST_SOURCES = ("camera", "coins", "moon", "page", "text", "clock", "horse")


@dataclass(frozen=True)
class Pools:
    train: np.ndarray  # (P, H, W, C) uint8, the pool that selection and training draw from
    train_kind: tuple  # "natural" or "gaudy", per train image
    test: np.ndarray  # (T, H, W, C) uint8, held out: never shown for training


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
    return img


def gaudy(images: np.ndarray) -> np.ndarray:
    """Each colour channel binarized at its mean (per image), as in Cowley et al."""
    x = images.astype(np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return np.where(x > mean, 255, 0).astype(np.uint8)


def cut_patches(sources: list[np.ndarray], n: int, size: int, colour: bool, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros((n, size, size, 3 if colour else 1), np.uint8)
    for i in range(n):
        src = sources[rng.integers(len(sources))]
        h, w = src.shape[:2]
        side = int(rng.integers(max(16, min(h, w) // 8), max(17, min(h, w) // 2)))
        y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        crop = resize(src[y:y + side, x:x + side], (size, size), anti_aliasing=True, preserve_range=True)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = crop.astype(np.float32)
        if not colour:
            crop = crop @ np.array([0.299, 0.587, 0.114], np.float32)
            crop = crop[..., None]
        out[i] = np.clip(np.rint(crop), 0, 255).astype(np.uint8)
    return out


@lru_cache(maxsize=4)
def make_pools(cfg: ImagesConfig) -> Pools:
    rng = np.random.default_rng(cfg.seed)
    train_src = [s for s in (_source(n) for n in TRAIN_SOURCES) if s is not None]
    test_src = [s for s in (_source(n) for n in TEST_SOURCES) if s is not None]
    n_gaudy = int(round(cfg.pool_size * cfg.gaudy_share))
    natural = cut_patches(train_src, cfg.pool_size - n_gaudy, cfg.size_px, cfg.colour, rng)
    gaudy_imgs = gaudy(cut_patches(train_src, n_gaudy, cfg.size_px, cfg.colour, rng))
    test = cut_patches(test_src, cfg.test_size, cfg.size_px, cfg.colour, rng)
    kinds = ("natural",) * len(natural) + ("gaudy",) * n_gaudy
    return Pools(np.concatenate([natural, gaudy_imgs]), kinds, test)
