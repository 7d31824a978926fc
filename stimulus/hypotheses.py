"""Named hypotheses about what neurons compute, and the evidence the recorded counts give for each.

A hypothesis is a function from images (B, C, H, W) float in [0, 1] (torch) to
rates (B, n_neurons) in spikes/s. It can be
  - an ensemble member of the online model (`member_hypothesis`),
  - one of two fitted model variants (any predictor: `predictor_hypothesis` takes its members' mean),
  - a hand-written model, e.g. "this neuron is a dot detector", named by import path
    "package.module:function" (`load_hypothesis`).
`HypothesisSet` stacks named hypotheses into a Predictor whose members are the
hypotheses, so selection and synthesis discriminate them with the same
objectives they use for ensemble members.

`EvidenceTracker` keeps, for each hypothesis, the log-likelihood of all observed
counts (Poisson, optionally tempered by the Fano factor: overdispersed counts
carry less evidence per spike than Poisson would claim), updated trial by trial;
`report()` is the dict the session summary shows.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Callable, Sequence

import numpy as np
import torch

HypothesisFn = Callable[[torch.Tensor], torch.Tensor]


def load_hypothesis(path: str) -> HypothesisFn:
    """Import "package.module:function" (dots after the colon reach attributes, e.g. "mod:Class.method")."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"hypothesis path {path!r} must look like 'package.module:function'")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"hypothesis path {path!r}: {module_name} has no {attr!r}") from None
    if not callable(obj):
        raise ValueError(f"hypothesis path {path!r} does not name a callable")
    return obj


def member_hypothesis(predictor, member: int) -> HypothesisFn:
    """One ensemble member of `predictor` as a hypothesis."""
    if not 0 <= member < predictor.n_members:
        raise ValueError(f"member {member} out of range: the model has {predictor.n_members} members")
    return lambda images, neurons=None: predictor.rates(images, neurons=neurons)[member]


def predictor_hypothesis(predictor) -> HypothesisFn:
    """A fitted model variant as one hypothesis: the mean over its members."""
    return lambda images, neurons=None: predictor.rates(images, neurons=neurons).mean(0)


def _takes_neurons(fn: HypothesisFn) -> bool:
    try:
        return "neurons" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def _call(fn: HypothesisFn, images: torch.Tensor, neurons: Sequence[int] | None) -> torch.Tensor:
    if _takes_neurons(fn):
        return torch.as_tensor(fn(images, neurons=neurons), dtype=images.dtype)
    # Hand-written hypotheses usually take images only: compute all neurons, keep the asked ones.
    out = torch.as_tensor(fn(images), dtype=images.dtype)
    if out.ndim == 1:
        out = out[:, None]
    return out if neurons is None else out[:, list(neurons)]


class HypothesisSet:
    """Named hypotheses stacked as a Predictor: rates(images) -> (n_hypotheses, B, n_neurons)."""

    def __init__(self, hypotheses: dict[str, HypothesisFn], n_neurons: int, version: int = 0):
        if len(hypotheses) < 2:
            raise ValueError("discriminating needs at least two hypotheses")
        self.names = list(hypotheses)
        self.fns = list(hypotheses.values())
        self.n_neurons = n_neurons
        self.version = version

    @property
    def n_members(self) -> int:
        return len(self.fns)

    def rates(self, images: torch.Tensor, neurons: Sequence[int] | None = None) -> torch.Tensor:
        return torch.stack([_call(fn, images, neurons) for fn in self.fns])


def build_hypotheses(specs, n_neurons: int, predictor=None) -> HypothesisSet:
    """HypothesisSet from the rig file's [[selection.hypotheses]] entries (stimulus.selection_config.HypothesisSpec)."""
    fns: dict[str, HypothesisFn] = {}
    for spec in specs:
        if spec.name in fns:
            raise ValueError(f"hypothesis name {spec.name!r} appears twice")
        if spec.source == "member":
            if predictor is None:
                raise ValueError(f"hypothesis {spec.name!r} is an ensemble member, but there is no model yet")
            fns[spec.name] = member_hypothesis(predictor, spec.member)
        else:
            fns[spec.name] = load_hypothesis(spec.path)
    return HypothesisSet(fns, n_neurons, version=getattr(predictor, "version", 0))


def poisson_log_likelihood(rates_hz: np.ndarray, counts: np.ndarray, window_s: float) -> np.ndarray:
    """log P(counts | Poisson(rate * window)) elementwise, with log k! included (so values are comparable)."""
    from scipy.special import gammaln

    lam = np.maximum(np.asarray(rates_hz, np.float64), 1e-3) * window_s
    k = np.asarray(counts, np.float64)
    return k * np.log(lam) - lam - gammaln(k + 1)


class EvidenceTracker:
    """Log-likelihood of the observed counts under each named hypothesis, and the posterior it implies."""

    def __init__(
        self,
        names: Sequence[str],
        prior: Sequence[float] | None = None,
        fano_factor: float = 1.0,
        neurons: Sequence[int] | None = None,
    ):
        self.names = list(names)
        m = len(self.names)
        p = np.full(m, 1.0 / m) if prior is None else np.asarray(prior, np.float64) / np.sum(prior)
        self.log_prior = np.log(p)
        self.fano_factor = fano_factor
        self.neurons = None if neurons is None else list(neurons)
        self.log_likelihood = np.zeros(m)
        self.per_neuron: np.ndarray | None = None  # (M, N) running totals
        self.n_updates = 0
        self.n_presentations = 0
        self.history: list[np.ndarray] = []  # posterior after each update

    def update(self, pred_rates_hz: np.ndarray, counts: np.ndarray, window_s: float) -> np.ndarray:
        """pred_rates_hz (M, n, N) Hz as each hypothesis predicted for the n images shown; counts (n, N).
        Returns the posterior after this update."""
        pred = np.asarray(pred_rates_hz, np.float64)
        counts = np.asarray(counts, np.float64)
        if self.neurons is not None:
            pred, counts = pred[..., self.neurons], counts[..., self.neurons]
        if pred.shape[0] != len(self.names) or pred.shape[1:] != counts.shape:
            raise ValueError(
                f"predictions {pred.shape} do not match {len(self.names)} hypotheses x counts {counts.shape}"
            )
        ll = poisson_log_likelihood(pred, counts[None], window_s).sum(1) / self.fano_factor  # (M, N)
        self.per_neuron = ll if self.per_neuron is None else self.per_neuron + ll
        self.log_likelihood += ll.sum(1)
        self.n_updates += 1
        self.n_presentations += counts.shape[0]
        post = self.posterior()
        self.history.append(post)
        return post

    def posterior(self) -> np.ndarray:
        """(M,) posterior over the hypotheses, from the prior and the log-likelihoods so far."""
        z = self.log_prior + self.log_likelihood
        z = z - z.max()
        p = np.exp(z)
        return p / p.sum()

    def report(self) -> dict:
        """The evidence as the session summary shows it (JSON-ready)."""
        post = self.posterior()
        best = int(np.argmax(post))
        return {
            "hypotheses": self.names,
            "log_likelihood": {n: float(v) for n, v in zip(self.names, self.log_likelihood)},
            "posterior": {n: float(v) for n, v in zip(self.names, post)},
            "best": self.names[best],
            "log_bayes_factor_best_vs_next": float(np.sort(self.log_likelihood)[-1] - np.sort(self.log_likelihood)[-2])
            if len(self.names) > 1
            else 0.0,
            "updates": self.n_updates,
            "presentations": self.n_presentations,
            "fano_factor": self.fano_factor,
        }
