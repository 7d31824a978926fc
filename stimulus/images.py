"""Pixel conversions between the wire (uint8 HxWxC) and the models (float in [0, 1])."""

from __future__ import annotations

import numpy as np


def to_unit_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, C) -> float32 in [0, 1]."""
    return np.asarray(pixels, dtype=np.float32) / 255.0


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8, rounded and clipped."""
    return np.clip(np.rint(np.asarray(images) * 255.0), 0, 255).astype(np.uint8)
