"""Gradient-based synthesis: raises its objective, stays presentable, honours step budgets and deadlines."""
import math
import time

import numpy as np
import torch

from stimulus.synthesis import (Jitter, Stopper, gaussian_blur, most_exciting_images, noise_images, synthesize,
                                to_pixels)

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
    objective = lambda x: p.rates(x, neurons=[1]).mean(0)[:, 0]
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
    objective = lambda x: p.rates(x).mean(0).sum(1)
    init = noise_images(2, SHAPE, seed=2)
    t0 = time.perf_counter()
    res = synthesize(objective, init, max_steps=10_000_000, deadline_s=t0 + 0.3)
    elapsed = time.perf_counter() - t0
    assert res.stopped_by == "deadline"
    assert 0 < res.steps < 10_000_000
    assert elapsed < 0.3 + 0.5  # slack for a loaded machine; the point is it does not run 10M steps
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
