"""Objectives: how much an image is worth showing, given what the hypotheses predict.

Every objective takes predicted rates `(M, B, N)` in spikes/s (M hypotheses or ensemble members, B images, N
neurons) and returns a per-neuron score `(B, N)`; `population_score` sums (or weights) it over neurons to one
number per image. All are plain torch: the same code scores a pool under no_grad and drives gradient ascent
in synthesis.

The divergences work on spike counts in the response window (roughly Poisson), so a rate difference is
weighed by the count noise at that rate; `poisson_js` with hypothesis weights is the expected information
one presentation gives about which hypothesis is true. `predictive_information` ("epig") scores instead how
much a presentation improves predictions on reference natural images, which plain disagreement does not:
members disagree most on images unlike anything they were trained on. Why each objective: docs/image-selection.md.
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
            total = (
                total + poisson_kl(rates_hz[i], rates_hz[j], window_s) + poisson_kl(rates_hz[j], rates_hz[i], window_s)
            )
    return total / (m * (m - 1))


def _max_count(mean_counts: torch.Tensor) -> int:
    """Where to truncate the count support: beyond mean + 8 sd of the largest mean the mass is negligible."""
    top = float(mean_counts.detach().max())
    return int(top + 8.0 * top**0.5 + 10)


def poisson_js(
    rates_hz: torch.Tensor, window_s: float, weights: torch.Tensor | Sequence[float] | None = None
) -> torch.Tensor:
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


def controversial(
    rates_high_hz: torch.Tensor, rates_low_hz: torch.Tensor, window_s: float | None = None
) -> torch.Tensor:
    """Golan et al.'s controversial images for two named hypotheses: positive where the first predicts high
    and the second low, elementwise on (B, N).

    A log ratio, so a doubling counts the same at any rate. With `window_s`, the score is the signed
    Poisson KL instead (the difference weighed by the noise at that rate).
    """
    if window_s is None:
        return torch.log(rates_high_hz.clamp_min(EPS_HZ)) - torch.log(rates_low_hz.clamp_min(EPS_HZ))
    sign = torch.sign(rates_high_hz - rates_low_hz)
    return sign * poisson_kl(rates_high_hz, rates_low_hz, window_s)


def excitation(rates_hz: torch.Tensor, spread_penalty: float = 0.0) -> torch.Tensor:
    """The most-exciting-image objective: the members' mean rate minus `spread_penalty` times their standard
    deviation, (M, B, N) -> (B, N) Hz.

    With a penalty the MEI is the image the members agree drives the neuron hard (a lower confidence bound),
    not one where a single member extrapolates wildly: off the images they were trained on the members
    disagree, and their mean there is least trustworthy.
    """
    mean = rates_hz.mean(dim=0)
    if spread_penalty == 0.0 or rates_hz.shape[0] < 2:
        return mean
    # + a tiny constant: the gradient of sqrt at zero spread (members that agree exactly) is infinite.
    spread = (rates_hz.var(dim=0, unbiased=False) + 1e-6).sqrt()
    return mean - spread_penalty * spread


def predictive_information(
    rates_hz: torch.Tensor, reference_hz: torch.Tensor, window_s: float, fano_factor: float = 1.0
) -> torch.Tensor:
    """Expected predictive information gain (EPIG) about responses to reference images, (M, B, N) -> (B, N) nats.

    EPIG(x) = E_{x*} [ I(y ; y* | x, x*) ] (Smith et al. 2023): the mutual information between the count y a
    candidate x evokes and the count y* of the same neuron for a reference image x*. `reference_hz` (M, R, N)
    are the members' rates for R reference images from the natural pool (never the held-out test set); the M
    members stand in for samples of the posterior.

    Gaussian approximation, per neuron, in counts over `window_s`: y = f(x) + e with count noise of variance
    F * E[f] (F = `fano_factor`), so var y = var_m f(x) + F * mean_m f(x), cov = cov_m (f(x), f(x*)), and
    EPIG(x) ~ mean over x* of -0.5 log(1 - rho^2), rho = cov / sqrt(var y * var y*).

    Guarantees (tested): members that agree on x, or on every x*, give exactly 0; disagreement on x that
    co-varies with disagreement on the references beats disagreement that does not, at equal variance; a
    loud neuron's disagreement counts for less. With few members EPIG behaves much like a noise-normalised
    disagreement (docs/image-selection.md), so candidates_from = "natural" is what keeps gaudy images out.
    """
    m = rates_hz.shape[0]
    if reference_hz.shape[0] != m or reference_hz.shape[-1] != rates_hz.shape[-1]:
        raise ValueError(
            f"reference rates {tuple(reference_hz.shape)} do not match candidate rates "
            f"{tuple(rates_hz.shape)}: both must be (members, images, neurons) with the same members "
            f"and neurons"
        )
    if m < 2:
        return torch.zeros_like(rates_hz[0])
    y = _counts_mean(rates_hz, window_s)  # (M, B, N)
    ys = _counts_mean(reference_hz, window_s)  # (M, R, N)
    dy = y - y.mean(0)
    dys = ys - ys.mean(0)
    var_y = dy.pow(2).mean(0) + fano_factor * y.mean(0)  # (B, N)
    var_ys = dys.pow(2).mean(0) + fano_factor * ys.mean(0)  # (R, N)
    cov = torch.einsum("mbn,mrn->brn", dy, dys) / m  # (B, R, N)
    rho2 = cov.pow(2) / (var_y.unsqueeze(1) * var_ys.unsqueeze(0))
    # rho^2 < 1 always (the noise terms are positive); the clamp guards rounding near a zero noise floor.
    return (-0.5 * torch.log1p(-rho2.clamp(max=1.0 - 1e-6))).mean(1)


def population_score(
    per_neuron: torch.Tensor, neuron_weights: torch.Tensor | Sequence[float] | None = None
) -> torch.Tensor:
    """(B, N) -> (B,): the sum over neurons, or a weighted sum (e.g. to favour poorly fitted neurons)."""
    if neuron_weights is None:
        return per_neuron.sum(dim=-1)
    w = torch.as_tensor(neuron_weights, dtype=per_neuron.dtype, device=per_neuron.device)
    return per_neuron @ w


OBJECTIVES = ("epig", "disagreement", "js", "kl")


def discrimination_score(
    rates_hz: torch.Tensor,
    kind: str,
    window_s: float,
    weights: torch.Tensor | Sequence[float] | None = None,
    reference_hz: torch.Tensor | None = None,
    fano_factor: float = 1.0,
) -> torch.Tensor:
    """The per-neuron objective named in the rig file, (M, B, N) -> (B, N).

    "epig" needs `reference_hz`, the members' rates (M, R, N) for the reference images (same neurons).
    """
    if kind == "epig":
        if reference_hz is None:
            raise ValueError("objective 'epig' needs the members' rates for the reference images (reference_hz)")
        return predictive_information(rates_hz, reference_hz, window_s, fano_factor)
    if kind == "disagreement":
        return disagreement(rates_hz, relative=True)
    if kind == "js":
        return poisson_js(rates_hz, window_s, weights)
    if kind == "kl":
        return symmetric_poisson_kl(rates_hz, window_s)
    raise ValueError(f"unknown objective {kind!r}; expected one of {OBJECTIVES}")
