"""Image identity: pixels are keyed by a content hash, so every process caches an image once."""
from __future__ import annotations

import hashlib

import numpy as np


def image_hash(pixels: np.ndarray) -> str:
    """16 hex digits of SHA-1 over dtype, shape and bytes (uint8 HxWxC images in practice)."""
    a = np.ascontiguousarray(pixels)
    h = hashlib.sha1()
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.data)
    return h.hexdigest()[:16]


def to_unit_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, C) -> float32 in [0, 1]."""
    return np.asarray(pixels, dtype=np.float32) / 255.0


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8, rounded and clipped."""
    return np.clip(np.rint(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)
