"""A custom neuron type for the virtual cortex, named by import path in a rig-file-like config (tests only)."""

import numpy as np


def brightness_and_redness(images: np.ndarray) -> np.ndarray:
    """(B, H, W, C) float in [0, 1] -> (B, 2) spikes/s: one neuron likes bright images, one likes red ones."""
    x = np.asarray(images, np.float32)
    bright = x.mean(axis=(1, 2, 3))
    red = (x[..., 0] - x[..., 1:].mean(-1)).mean(axis=(1, 2)) if x.shape[-1] == 3 else np.zeros(len(x))
    return np.stack([4.0 + 40.0 * bright, 5.0 + 60.0 * np.clip(red, 0, None)], 1)


def _template(size: int, channels: int, which: int) -> np.ndarray:
    """A fixed preferred image (size, size, channels), zero-mean: 0 red left / blue right, 1 a bright centre disc."""
    yy, xx = np.mgrid[0:size, 0:size] / max(1, size - 1)
    t = np.zeros((size, size, channels), np.float32)
    if which == 0:
        t[..., 0] = np.where(xx < 0.5, 1.0, -1.0)
        if channels == 3:
            t[..., 2] = -t[..., 0]
    else:
        disc = ((yy - 0.5) ** 2 + (xx - 0.5) ** 2) < 0.2**2
        t[...] = np.where(disc, 1.0, -0.3)[..., None]
    return t - t.mean()


def template_matchers(images: np.ndarray) -> np.ndarray:
    """(B, H, W, C) float in [0, 1] -> (B, 2) spikes/s: two neurons whose preferred image is known, each driven by
    the cosine similarity of the image (less its mean) with its template (_template), rectified: 2 spikes/s for an
    unrelated image, 62 for the template itself."""
    x = np.asarray(images, np.float32)
    x = x - x.mean(axis=(1, 2, 3), keepdims=True)
    out = []
    for which in (0, 1):
        t = _template(x.shape[1], x.shape[3], which)
        num = (x * t).sum(axis=(1, 2, 3))
        den = np.sqrt((x**2).sum(axis=(1, 2, 3)) * (t**2).sum()) + 1e-6
        out.append(2.0 + 60.0 * np.clip(num / den, 0.0, 1.0))
    return np.stack(out, 1)
