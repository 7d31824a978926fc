"""Gradient-based synthesis: raises its objective, stays presentable, honours step budgets and deadlines."""

import math
import time

import numpy as np
import pytest
import torch

from stimulus.synthesis import (
    Jitter,
    NaturalRange,
    Stopper,
    best_pool_images,
    from_pixels,
    gaussian_blur,
    image_stats,
    most_exciting_images,
    noise_images,
    synthesize,
    to_pixels,
)

SHAPE = (16, 16, 3)


class TinyPredictor:
    """Members = slightly different copies of N oriented linear-nonlinear units; records the neurons asked for."""

    def __init__(self, n_neurons=4, n_members=2, seed=0):
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
        filters = []
        for i in range(n_neurons):
            theta = np.pi * i / n_neurons
            u = (xx - 8) * np.cos(theta) + (yy - 8) * np.sin(theta)
            env = torch.exp(-((xx - 8) ** 2 + (yy - 8) ** 2) / 18.0)
            filters.append((env * torch.cos(u * 0.9)).expand(3, 16, 16))
        base = torch.stack(filters)  # (N, 3, 16, 16)
        self.w = torch.stack([base + 0.05 * torch.randn(base.shape, generator=g) for _ in range(n_members)])
        self.n_members, self.n_neurons, self.version = n_members, n_neurons, 1
        self.asked = []

    def rates(self, images, neurons=None):
        self.asked.append(None if neurons is None else list(neurons))
        w = self.w if neurons is None else self.w[:, list(neurons)]
        drive = torch.einsum("bchw,mnchw->mbn", images - 0.5, w)
        return 5.0 + 10.0 * torch.nn.functional.softplus(drive / 4.0)


def test_synthesis_raises_the_objective_and_keeps_pixels_in_range():
    p = TinyPredictor()

    def objective(x):
        return p.rates(x, neurons=[1]).mean(0)[:, 0]

    init = noise_images(3, SHAPE, seed=1)
    before = objective(init).detach()
    res = synthesize(objective, init, max_steps=60, transform=Jitter(1, seed=0))
    assert res.steps == 60 and res.stopped_by == "steps"
    assert torch.all(res.scores > before + 5.0)
    assert float(res.images.min()) >= 0.0 and float(res.images.max()) <= 1.0
    # The returned images really score what is reported (scores are of the best version seen).
    assert torch.all(objective(res.images).detach() > before + 5.0)


def test_synthesis_stops_at_the_deadline_with_its_best_images():
    p = TinyPredictor()

    def objective(x):
        return p.rates(x).mean(0).sum(1)

    init = noise_images(2, SHAPE, seed=2)
    t0 = time.perf_counter()
    res = synthesize(objective, init, max_steps=10_000_000, deadline_s=t0 + 0.3)
    elapsed = time.perf_counter() - t0
    assert res.stopped_by == "deadline"
    assert 0 < res.steps < 10_000_000
    assert elapsed < 0.3 + 2.0  # slack for a loaded machine; the point is it does not run 10M steps
    assert torch.all(res.scores >= objective(init).detach())


def test_stopper_budget_and_past_deadline():
    s = Stopper(3)
    assert [s(i) for i in range(4)] == [False, False, False, True]
    late = Stopper(100, deadline_s=time.perf_counter() - 1.0)
    assert late(0) and late.reason == "deadline"


def test_most_exciting_images_compute_only_their_neurons_and_drive_them():
    p = TinyPredictor(n_neurons=4)
    neurons = [0, 2]
    meis = most_exciting_images(p, neurons, SHAPE, steps=50, seed=0)
    assert meis.shape == (2, 16, 16, 3) and meis.dtype == np.uint8
    assert p.asked and all(asked == neurons for asked in p.asked)
    x = torch.from_numpy(meis).permute(0, 3, 1, 2).float() / 255.0
    r = p.rates(x).mean(0).detach()  # (2 images, 4 neurons)
    grey = p.rates(torch.full((1, 3, 16, 16), 0.5)).mean(0).detach()[0]
    for b, n in enumerate(neurons):
        assert r[b, n] > grey[n] + 10.0  # well above the grey-screen response
        assert r[b, n] == r[:, n].max()  # each MEI is the best of the set for its own neuron
    # Same seed, same images: reproducible on a virtual clock.
    assert np.array_equal(meis, most_exciting_images(TinyPredictor(n_neurons=4), neurons, SHAPE, steps=50, seed=0))


def test_gaussian_blur_keeps_the_mean_and_smooths():
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = gaussian_blur(x, 1.0)
    assert abs(float(x.mean() - y.mean())) < 0.02
    assert float(y.std()) < float(x.std())
    assert gaussian_blur(x, 0.0) is x  # sigma 0: no blur
    # A point spreads into a separable Gaussian of that sigma: total kept, exp(-d^2 / 2) falloff, cut at 2.5 sigma.
    point = torch.zeros(1, 3, 16, 16)
    point[:, :, 8, 8] = 1.0
    spread = gaussian_blur(point, 1.0)[0]
    assert torch.allclose(spread.sum(dim=(1, 2)), torch.ones(3))
    centre = spread[:, 8, 8]
    assert torch.allclose(spread[:, 8, 9] / centre, torch.full((3,), math.exp(-0.5)))
    assert torch.allclose(spread[:, 7, 8] / centre, torch.full((3,), math.exp(-0.5)))
    assert torch.allclose(spread[:, 9, 9] / centre, torch.full((3,), math.exp(-1.0)))
    assert torch.all(spread[:, 8, 12] == 0) and torch.all(spread[:, 4, 8] == 0)


def test_to_pixels_rounds_clips_and_puts_channels_last():
    x = torch.zeros(1, 3, 2, 2)
    x[0, :, 0, 0] = torch.tensor([0.0, 0.5, 1.0])
    x[0, :, 1, 1] = torch.tensor([-0.2, 1.3, 0.25])
    px = to_pixels(x)
    assert px.dtype == np.uint8 and px.shape == (1, 2, 2, 3)
    assert px[0, 0, 0].tolist() == [0, 128, 255] and px[0, 1, 1].tolist() == [0, 255, 64]
    assert px[0, 0, 1].tolist() == [0, 0, 0]


def natural_like(n=200, seed=0):
    """Smooth, moderate-contrast images (uint8): the 'natural' set a range is taken from."""
    x = noise_images(n, SHAPE, seed=seed, amplitude=0.1, smooth_sigma_px=2.0)
    x = x * torch.linspace(0.6, 1.4, n).view(n, 1, 1, 1) + torch.linspace(-0.15, 0.15, n).view(n, 1, 1, 1)
    return to_pixels(x.clamp(0, 1))


def test_natural_range_is_the_pools_percentiles_and_the_projection_lands_inside_it():
    nat = natural_like()
    rng = NaturalRange.of(nat, (5.0, 95.0))
    mean, rms = (v.numpy() for v in image_stats(from_pixels(nat)))
    assert np.isclose(rng.mean_range[0], np.percentile(mean, 5)) and np.isclose(
        rng.rms_range[1], np.percentile(rms, 95)
    )
    wild = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(3))  # uniform noise: RMS ~0.29
    wild[0] = 0.97  # flat and bright
    wild[1] = (wild[1] > 0.5).float()  # binary: the most contrast there is
    assert not rng.contains(wild).any()
    inside = rng(wild)
    assert rng.contains(inside[1:], tol=1e-3).all()
    # A flat image has no pattern to scale up: only its level is moved into range.
    level, contrast = image_stats(inside[:1])
    assert rng.mean_range[0] <= float(level) <= rng.mean_range[1] and float(contrast) < 1e-6
    assert float(inside.min()) >= 0.0 and float(inside.max()) <= 1.0
    # An image already inside is left alone.
    ok = from_pixels(nat[100:101])
    assert torch.allclose(rng(ok), ok, atol=1e-6)
    with pytest.raises(ValueError, match="natural range"):
        NaturalRange((0.6, 0.4), (0.1, 0.2))


def test_an_mei_under_the_natural_bound_keeps_natural_contrast_and_without_it_does_not():
    # The tiny neurons are linear in contrast: unbounded ascent drives the image to full contrast.
    p = TinyPredictor(n_neurons=4)
    nat = natural_like()
    rng = NaturalRange.of(nat, (1.0, 99.0))
    start = nat[best_pool_images(p, [0, 1, 3], nat)]
    free = most_exciting_images(p, [0, 1, 3], SHAPE, steps=40, init=start)
    bounded = most_exciting_images(p, [0, 1, 3], SHAPE, steps=40, init=start, project=rng)
    assert not rng.contains(from_pixels(free), tol=2 / 255).all()
    assert rng.contains(from_pixels(bounded), tol=2 / 255).all()  # uint8 rounding: within 2/255
    # Still an MEI: it beats the best natural image it started from, on the model.
    diag = torch.arange(3)
    r_start = p.rates(from_pixels(start), neurons=[0, 1, 3]).mean(0)[diag, diag]
    r_mei = p.rates(from_pixels(bounded), neurons=[0, 1, 3]).mean(0)[diag, diag]
    assert torch.all(r_mei > r_start + 1.0)


def test_best_pool_images_is_each_neurons_top_image_and_the_spread_penalty_moves_it():
    p = TinyPredictor(n_neurons=4, n_members=3, seed=1)
    nat = natural_like(60, seed=4)
    x = from_pixels(nat)
    r = p.rates(x).detach()
    picks = best_pool_images(p, [2, 0], nat)
    assert picks.tolist() == [int(r.mean(0)[:, 2].argmax()), int(r.mean(0)[:, 0].argmax())]
    lcb = r.mean(0) - 50.0 * r.std(0, unbiased=False)
    assert best_pool_images(p, [2], nat, spread_penalty=50.0).tolist() == [int(lcb[:, 2].argmax())]
