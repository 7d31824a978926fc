"""An in-process closed loop on the virtual cortex, shared by the selection benchmarks.

No sockets and no clocks: each trial the chooser picks images, the ground-truth
population gives rates, counts are drawn (Poisson, or gamma-Poisson with the
configured Fano factor), the online model stores them and trains for a fixed
number of steps, and its snapshot is what the chooser uses next trial. The
real parts are used: acquisition.population.Population, stimulus.pools,
models.factory.make_online_model and stimulus.selection.ImageChooser. Two arms
of a benchmark differ only in the selection mix; seeds, trial budget and
training steps are the same, so their curves are comparable within one run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from acquisition.config import PopulationConfig
from acquisition.population import Population
from models.config import ModelConfig
from models.factory import make_online_model
from models.metrics import correlation
from stimulus.config import ImagesConfig
from stimulus.pools import Pools, make_pools
from stimulus.selection import ImageChooser
from stimulus.selection_config import SelectionConfig
from stimulus.synthesis import from_pixels


def draw_counts(rates_hz: np.ndarray, window_s: float, fano_factor: float, rng: np.random.Generator) -> np.ndarray:
    """Spike counts in a window: Poisson at Fano 1, else gamma-Poisson with variance = fano * mean."""
    mean = np.maximum(rates_hz, 0.0) * window_s
    if fano_factor <= 1.0:
        return rng.poisson(mean)
    extra = fano_factor - 1.0
    return rng.poisson(rng.gamma(np.maximum(mean, 1e-9) / extra, extra))


def predict_mean(predictor, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """Members' mean rates (n, N) for uint8 images, without gradients."""
    out = []
    with torch.no_grad():
        for s in range(0, len(images), batch):
            out.append(predictor.rates(from_pixels(images[s:s + batch])).mean(0).double().numpy())
    return np.concatenate(out)


def mean_correlation(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean over neurons of the Pearson correlation across images (a constant prediction scores 0)."""
    return float(correlation(pred, true).mean())


@dataclass
class LoopSetup:
    images: ImagesConfig = field(default_factory=lambda: ImagesConfig(pool_size=2000, test_size=200))
    population: PopulationConfig = field(default_factory=PopulationConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    images_per_trial: int = 5
    window_s: float = 0.15
    fano_factor: float = 1.2
    seed: int = 0


class VirtualExperiment:
    """The parts both arms share: pools, ground truth, and the held-out truth to score against."""

    def __init__(self, setup: LoopSetup):
        self.setup = setup
        self.pools: Pools = make_pools(setup.images)
        self.population = Population(setup.population, setup.images.size_px, setup.images.colour)
        self.image_shape = tuple(self.pools.train.shape[1:])
        self.test_truth = self.population.rates(self.pools.test)

    def test_accuracy(self, predictor) -> float:
        if predictor is None:
            return 0.0
        return mean_correlation(predict_mean(predictor, self.pools.test), self.test_truth)


@dataclass
class ArmResult:
    name: str
    trials: list[int]  # trials done at each evaluation
    accuracy: list[float]  # held-out accuracy at each evaluation
    seconds: float
    reasons: dict[str, int]  # how many images of each kind were shown
    model: object = None  # the online model at the end (for MEIs etc.)


def run_arm(exp: VirtualExperiment, name: str, selection: SelectionConfig, n_trials: int, steps_per_trial: int,
            eval_every: int, seed: int | None = None, warmup_trials: int = 0) -> ArmResult:
    """One arm: n_trials closed-loop trials with this selection mix; accuracy every eval_every trials.

    The first `warmup_trials` use random natural images in both arms (a model needs some data before
    its disagreement means anything)."""
    s = exp.setup
    seed = s.seed if seed is None else seed
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 7])
    model = make_online_model(s.model, exp.population.n_neurons, exp.image_shape)
    chooser = ImageChooser(selection, exp.pools, seed=seed)
    warm = ImageChooser(SelectionConfig(mix={"random": 1.0}), exp.pools, seed=seed)
    predictor = None
    trials, acc, reasons = [], [], {}
    t0 = time.perf_counter()
    for trial in range(n_trials):
        src = warm if trial < warmup_trials else chooser
        choices = src.choose(trial, s.images_per_trial, predictor, None)
        for c in choices:
            kind = c.reason.split()[0]
            reasons[kind] = reasons.get(kind, 0) + 1
        pixels = np.stack([c.pixels for c in choices])
        counts = draw_counts(exp.population.rates(pixels), s.window_s, s.fano_factor, rng)
        model.add_responses(pixels, counts, s.window_s)
        model.train(steps_per_trial)
        predictor = model.snapshot()
        if (trial + 1) % eval_every == 0 or trial + 1 == n_trials:
            trials.append(trial + 1)
            acc.append(exp.test_accuracy(predictor))
    return ArmResult(name, trials, acc, time.perf_counter() - t0, reasons, model)


def trials_to_reach(trials: list[int], values: list[float], target: float) -> int | None:
    """First evaluated trial count at which `values` reaches `target` (None: never)."""
    for t, v in zip(trials, values):
        if v >= target:
            return t
    return None
