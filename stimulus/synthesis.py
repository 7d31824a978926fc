"""Gradient-based image synthesis, from small callable parts.

    objective  images (B, C, H, W) in [0, 1] -> (B,) score to maximise
    init       the starting images: pool images or noise (`noise_images`, `from_pixels`)
    transform  what the model sees each step: small random shifts (`Jitter`), so the
               result does not rely on one exact pixel alignment
    stopper    when to stop: a step budget and a perf_counter deadline (`Stopper`)
    project    where images may go: `NaturalRange` keeps each image's mean level and RMS
               contrast within the natural pool's range (applied to the start and after every step)

The loop (after Cowley et al.): gradient ascent in pixel space, the gradient smoothed and normalised by
its RMS (one step size suits any model and rate scale), images clamped to [0, 1] and lightly smoothed. Each
image keeps the best version seen, which is what comes back at the deadline.

`most_exciting_images` (MEIs) starts from the model's best pool image for each neuron, stays within the
natural range of contrast and mean level, and maximises the members' mean rate minus a multiple of their
spread, so that it works on the neuron and not only on the model (docs/image-selection.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from stimulus.images import to_uint8
from stimulus.objectives import excitation

ImageObjective = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SynthesisResult:
    """What `synthesize` returns."""

    images: torch.Tensor  # (B, C, H, W) float in [0, 1], the best version of each image
    scores: torch.Tensor  # (B,) objective of those images (as seen through the transform)
    steps: int  # gradient steps taken
    stopped_by: str  # "steps" or "deadline"


# ----------------------------------------------------------------------------- parts


def noise_images(
    n: int, image_shape: tuple[int, int, int], seed: int = 0, amplitude: float = 0.15, smooth_sigma_px: float = 1.0
) -> torch.Tensor:
    """Mid-grey plus smooth low-contrast noise, (n, C, H, W). A neutral start that breaks symmetry."""
    h, w, c = image_shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    x = gaussian_blur(x, smooth_sigma_px)
    x = x / x.flatten(1).std(dim=1).clamp_min(1e-6).view(n, 1, 1, 1)
    return (0.5 + amplitude * x).clamp(0.0, 1.0)


def from_pixels(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (n, H, W, C) -> float (n, C, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2).float() / 255.0


def to_pixels(images: torch.Tensor) -> np.ndarray:
    """float (n, C, H, W) in [0, 1] -> uint8 (n, H, W, C)."""
    return to_uint8(images.detach().permute(0, 2, 3, 1).cpu().numpy())


def gaussian_blur(x: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), reflect-padded; sigma 0 returns x."""
    if sigma_px <= 0:
        return x
    radius = max(1, int(math.ceil(2.5 * sigma_px)))
    radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma_px) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


class Jitter:
    """Shift the whole batch by up to `max_px` pixels each step (circularly), seeded."""

    def __init__(self, max_px: int = 1, seed: int = 0):
        self.max_px = max_px
        self.rng = np.random.default_rng(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.max_px <= 0:
            return x
        dy, dx = (int(v) for v in self.rng.integers(-self.max_px, self.max_px + 1, 2))
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


class Stopper:
    """Stops after `max_steps`, or early enough that the next step would not overrun `deadline_s`.

    The deadline is a time.perf_counter() value; the next step's cost is estimated from the slowest so far.
    On a virtual clock pass deadline_s=None: only the step budget counts, so runs are reproducible.
    """

    def __init__(self, max_steps: int, deadline_s: float | None = None):
        self.max_steps = max_steps
        self.deadline_s = deadline_s
        self._last = time.perf_counter()
        self._slowest = 0.0
        self.reason = "steps"

    def __call__(self, step: int) -> bool:
        now = time.perf_counter()
        if step > 0:
            self._slowest = max(self._slowest, now - self._last)
        self._last = now
        if step >= self.max_steps:
            self.reason = "steps"
            return True
        if self.deadline_s is not None and now + self._slowest >= self.deadline_s:
            self.reason = "deadline"
            return True
        return False


def image_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> (mean level (B,), RMS contrast (B,)), both over all pixels and channels.

    Over the channels too, so a colour contrast (a gaudy image's binarized channels) counts as contrast.
    """
    flat = x.flatten(1)
    mean = flat.mean(1)
    return mean, (flat - mean[:, None]).pow(2).mean(1).sqrt()


class NaturalRange:
    """Keeps images' mean level and RMS contrast within given bounds: a projection applied after each step.

    `NaturalRange.of(images, (1, 99))` takes the bounds from percentiles of a natural image set (the pool's
    natural images). The projection rescales each image's deviations from its mean to the nearest contrast
    inside the bounds and shifts its mean to the nearest level inside them, then clamps to [0, 1]; clamping
    lowers contrast and moves the mean, so it repeats a few times (each pass shrinks the error).
    """

    PASSES = 6

    def __init__(self, mean_range: tuple[float, float], rms_range: tuple[float, float]):
        if not (0.0 <= mean_range[0] <= mean_range[1] <= 1.0 and 0.0 <= rms_range[0] <= rms_range[1] <= 0.5):
            raise ValueError(f"bad natural range: mean {mean_range}, RMS contrast {rms_range}")
        self.mean_range = (float(mean_range[0]), float(mean_range[1]))
        self.rms_range = (float(rms_range[0]), float(rms_range[1]))

    @classmethod
    def of(cls, images: np.ndarray | torch.Tensor, percentiles: tuple[float, float] = (1.0, 99.0)) -> "NaturalRange":
        """Bounds from percentiles of `images` (uint8 (n, H, W, C) or float (n, C, H, W) in [0, 1])."""
        x = from_pixels(images) if isinstance(images, np.ndarray) else images
        if len(x) == 0:
            raise ValueError("a natural range needs at least one image")
        mean, rms = (v.double().numpy() for v in image_stats(x))
        lo, hi = percentiles
        return cls(
            (float(np.percentile(mean, lo)), float(np.percentile(mean, hi))),
            (float(np.percentile(rms, lo)), float(np.percentile(rms, hi))),
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.PASSES):
            mean, rms = image_stats(x)
            new_mean = mean.clamp(*self.mean_range)
            new_rms = rms.clamp(*self.rms_range)
            # A flat image has no deviations to scale: its contrast can only come from the next step's gradient.
            scale = torch.where(rms > 1e-6, new_rms / rms.clamp_min(1e-6), torch.ones_like(rms))
            x = (new_mean.view(-1, 1, 1, 1) + (x - mean.view(-1, 1, 1, 1)) * scale.view(-1, 1, 1, 1)).clamp(0.0, 1.0)
        return x

    def contains(self, x: torch.Tensor, tol: float = 0.0) -> torch.Tensor:
        """(B,) bool: within the bounds, give or take `tol`."""
        mean, rms = image_stats(x)
        return (
            (mean >= self.mean_range[0] - tol)
            & (mean <= self.mean_range[1] + tol)
            & (rms >= self.rms_range[0] - tol)
            & (rms <= self.rms_range[1] + tol)
        )

    def describe(self) -> dict:
        return {"mean_level": list(self.mean_range), "rms_contrast": list(self.rms_range)}


# ----------------------------------------------------------------------------- the loop


def synthesize(
    objective: ImageObjective,
    init: torch.Tensor,
    max_steps: int = 100,
    deadline_s: float | None = None,
    step_size: float = 0.05,
    grad_sigma_px: float = 1.0,
    image_sigma_px: float = 0.3,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> SynthesisResult:
    """Gradient ascent on `objective` from `init`; returns the best version of each image.

    `project` (e.g. a NaturalRange) maps images back into the allowed set: applied to the start and after
    every step, so every image scored, and so the one returned, lies in it.
    """
    stop = Stopper(max_steps, deadline_s)
    transform = transform or (lambda t: t)
    project = project or (lambda t: t.clamp(0.0, 1.0))
    x = project(init.detach().clone().clamp(0.0, 1.0))
    best = x.clone()
    best_score = torch.full((len(x),), -math.inf)
    step = 0
    while not stop(step):
        x.requires_grad_(True)
        score = objective(transform(x))
        (grad,) = torch.autograd.grad(score.sum(), x)
        with torch.no_grad():
            better = score.detach() > best_score
            best[better] = x.detach()[better]
            best_score = torch.where(better, score.detach(), best_score)
            grad = gaussian_blur(grad, grad_sigma_px)
            rms = grad.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12).view(-1, 1, 1, 1)
            x = project(gaussian_blur(x + step_size * grad / rms, image_sigma_px).clamp(0.0, 1.0))
        step += 1
    # The last update has not been scored yet: score it once (cheap, no gradient) when time allows.
    if step > 0 and (deadline_s is None or time.perf_counter() + stop._slowest / 2 < deadline_s):
        with torch.no_grad():
            score = objective(x)
            better = score > best_score
            best[better] = x[better]
            best_score = torch.where(better, score, best_score)
    if step == 0:
        with torch.no_grad():
            best_score = objective(x)
    return SynthesisResult(best.detach(), best_score.detach(), step, stop.reason)


# ----------------------------------------------------------------------------- MEIs


def mei_objective(predictor, neurons: Sequence[int], spread_penalty: float = 0.0) -> ImageObjective:
    """Image i maximises the members' mean rate of neuron neurons[i], minus `spread_penalty` times the members'
    standard deviation; computes only those neurons."""
    neurons = list(neurons)
    diag = torch.arange(len(neurons))

    def objective(images: torch.Tensor) -> torch.Tensor:
        score = excitation(predictor.rates(images, neurons=neurons), spread_penalty)  # (B, n)
        return score[diag, diag]

    return objective


def most_exciting_images(
    predictor,
    neurons: Sequence[int],
    image_shape: tuple[int, int, int],
    steps: int = 200,
    seed: int = 0,
    deadline_s: float | None = None,
    init: np.ndarray | None = None,
    chunk: int = 16,
    step_size: float = 0.05,
    jitter_px: int = 1,
    spread_penalty: float = 0.0,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> np.ndarray:
    """One MEI per neuron: uint8 (len(neurons), H, W, C).

    Starts from smooth noise (or from `init`, uint8 (len(neurons), H, W, C), e.g. each neuron's best
    pool image: `best_pool_images`). Maximises the members' mean rate minus `spread_penalty` standard
    deviations across members; `project` (a NaturalRange) bounds contrast and mean level. Neurons go
    through in chunks so only the chunk's neurons are computed; when a deadline is given, the time left
    is shared evenly among the chunks still to run.
    """
    neurons = list(neurons)
    h, w, c = image_shape
    out = np.zeros((len(neurons), h, w, c), np.uint8)
    starts = from_pixels(init) if init is not None else noise_images(len(neurons), image_shape, seed)
    chunks = [list(range(i, min(i + chunk, len(neurons)))) for i in range(0, len(neurons), chunk)]
    for ci, rows in enumerate(chunks):
        chunk_deadline = None
        if deadline_s is not None:
            now = time.perf_counter()
            chunk_deadline = now + max(0.0, deadline_s - now) / (len(chunks) - ci)
        result = synthesize(
            mei_objective(predictor, [neurons[r] for r in rows], spread_penalty),
            starts[rows],
            max_steps=steps,
            deadline_s=chunk_deadline,
            step_size=step_size,
            transform=Jitter(jitter_px, seed + ci),
            project=project,
        )
        out[rows] = to_pixels(result.images)
    return out


def best_pool_images(
    predictor, neurons: Sequence[int], pool: np.ndarray, spread_penalty: float = 0.0, batch: int = 256
) -> np.ndarray:
    """For each neuron, the row of `pool` (uint8 (P, H, W, C)) that scores highest on its MEI objective
    (members' mean minus `spread_penalty` spreads): where its MEI starts. Computes only those neurons."""
    neurons = list(neurons)
    scores = []
    with torch.no_grad():
        for s in range(0, len(pool), batch):
            scores.append(
                excitation(predictor.rates(from_pixels(pool[s : s + batch]), neurons=neurons), spread_penalty)
            )
    return torch.cat(scores).argmax(0).numpy()
