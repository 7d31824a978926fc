"""Objectives: how much an image is worth showing, given what the hypotheses predict.

Every objective takes predicted rates `(M, B, N)` in spikes/s (M hypotheses or
ensemble members, B images, N neurons) and returns a per-neuron score `(B, N)`;
`population_score` sums (or weights) it over neurons to one number per image.
All are plain torch, so the same code scores a candidate pool (under no_grad)
and drives gradient ascent in synthesis.

Why spike-count divergences and not rate differences: a neuron's count in a
response window is roughly Poisson, so a 5 Hz difference at 2 Hz is easy to
see and the same difference at 80 Hz is lost in the noise. The Poisson
KL / Jensen-Shannon divergences below weigh each difference by that noise;
the Jensen-Shannon divergence with hypothesis weights is exactly the
expected information (in nats) one presentation gives about which hypothesis
is true (the infomax criterion of Lewi et al. 2009).
"""
from __future__ import annotations

from typing import Sequence

import torch

EPS_HZ = 1e-3  # floor on a rate: a Poisson mean of zero makes every divergence infinite


def _counts_mean(rates_hz: torch.Tensor, window_s: float) -> torch.Tensor:
    return rates_hz.clamp_min(EPS_HZ) * window_s


def disagreement(rates_hz: torch.Tensor, relative: bool = False) -> torch.Tensor:
    """Variance across members, (M, B, N) -> (B, N) in Hz^2 (Cowley et al.'s active-learning score).

    relative=True divides by the mean rate (a Fano-like score), so neurons with
    high rates do not win only because they are loud.
    """
    var = rates_hz.var(dim=0, unbiased=False)
    if relative:
        var = var / rates_hz.mean(dim=0).clamp_min(1.0)
    return var


def poisson_kl(rates_p_hz: torch.Tensor, rates_q_hz: torch.Tensor, window_s: float) -> torch.Tensor:
    """KL(Poisson(p*T) || Poisson(q*T)) in nats, elementwise: q - p + p log(p/q) on count means."""
    p = _counts_mean(rates_p_hz, window_s)
    q = _counts_mean(rates_q_hz, window_s)
    return q - p + p * (torch.log(p) - torch.log(q))


def symmetric_poisson_kl(rates_hz: torch.Tensor, window_s: float) -> torch.Tensor:
    """Mean pairwise symmetrised KL between members, (M, B, N) -> (B, N). Cheap; unbounded."""
    m = rates_hz.shape[0]
    if m < 2:
        return torch.zeros_like(rates_hz[0])
    total = torch.zeros_like(rates_hz[0])
    for i in range(m):
        for j in range(i + 1, m):
            total = total + poisson_kl(rates_hz[i], rates_hz[j], window_s) + poisson_kl(rates_hz[j], rates_hz[i], window_s)
    return total / (m * (m - 1))


def _max_count(mean_counts: torch.Tensor) -> int:
    """Where to truncate the count support: beyond mean + 8 sd of the largest mean the mass is negligible."""
    top = float(mean_counts.detach().max())
    return int(top + 8.0 * top ** 0.5 + 10)


def poisson_js(rates_hz: torch.Tensor, window_s: float, weights: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor:
    """Jensen-Shannon divergence among M Poisson count distributions, (M, B, N) -> (B, N) nats.

    JS = H(sum_m w_m P_m) - sum_m w_m H(P_m), computed on the count support
    0..K (K from the largest mean). With `weights` the current posterior over
    hypotheses, this is the mutual information between the next count and the
    hypothesis: bounded by the prior's entropy (log 2 for two equal hypotheses).
    """
    m = rates_hz.shape[0]
    if weights is None:
        w = torch.full((m,), 1.0 / m, dtype=rates_hz.dtype, device=rates_hz.device)
    else:
        w = torch.as_tensor(weights, dtype=rates_hz.dtype, device=rates_hz.device)
        w = w / w.sum()
    lam = _counts_mean(rates_hz, window_s)  # (M, B, N)
    k = torch.arange(_max_count(lam) + 1, dtype=rates_hz.dtype, device=rates_hz.device)
    # log P_m(k) = k log(lam) - lam - log k!, shape (M, B, N, K)
    logp = k * torch.log(lam).unsqueeze(-1) - lam.unsqueeze(-1) - torch.lgamma(k + 1)
    logw = torch.log(w.clamp_min(1e-30)).view(m, 1, 1, 1)
    log_mix = torch.logsumexp(logw + logp, dim=0)  # (B, N, K)
    p = logp.exp()
    # sum_m w_m KL(P_m || mixture): equal to the JS divergence, and numerically kinder.
    kl_to_mix = (p * (logp - log_mix.unsqueeze(0))).sum(-1)  # (M, B, N)
    return (w.view(m, 1, 1) * kl_to_mix).sum(0).clamp_min(0.0)


def controversial(rates_high_hz: torch.Tensor, rates_low_hz: torch.Tensor, window_s: float | None = None) -> torch.Tensor:
    """Golan et al.'s controversial images for two named hypotheses: positive where the first predicts high
    and the second low, elementwise on (B, N).

    A log ratio, so a doubling counts the same at any rate. With `window_s`, the score is the signed
    Poisson KL instead (the difference weighed by the noise at that rate).
    """
    if window_s is None:
        return torch.log(rates_high_hz.clamp_min(EPS_HZ)) - torch.log(rates_low_hz.clamp_min(EPS_HZ))
    sign = torch.sign(rates_high_hz - rates_low_hz)
    return sign * poisson_kl(rates_high_hz, rates_low_hz, window_s)


def excitation(rates_hz: torch.Tensor) -> torch.Tensor:
    """The most-exciting-image objective: the members' mean rate, (M, B, N) -> (B, N) Hz."""
    return rates_hz.mean(dim=0)


def population_score(per_neuron: torch.Tensor, neuron_weights: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor:
    """(B, N) -> (B,): the sum over neurons, or a weighted sum (e.g. to favour poorly fitted neurons)."""
    if neuron_weights is None:
        return per_neuron.sum(dim=-1)
    w = torch.as_tensor(neuron_weights, dtype=per_neuron.dtype, device=per_neuron.device)
    return per_neuron @ w


OBJECTIVES = ("disagreement", "js", "kl")


def discrimination_score(rates_hz: torch.Tensor, kind: str, window_s: float,
                         weights: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor:
    """The per-neuron objective named in the rig file ("disagreement", "js" or "kl"), (M, B, N) -> (B, N)."""
    if kind == "disagreement":
        return disagreement(rates_hz, relative=True)
    if kind == "js":
        return poisson_js(rates_hz, window_s, weights)
    if kind == "kl":
        return symmetric_poisson_kl(rates_hz, window_s)
    raise ValueError(f"unknown objective {kind!r}; expected one of {OBJECTIVES}")
