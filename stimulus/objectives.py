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

Those scores ask which hypothesis is true. When the hypotheses are ensemble
members fitted to the data so far, the question a lab cares about is another:
how much better will the model predict the neurons' responses to natural
images? `predictive_information` (EPIG, objective "epig") scores that, against
a reference set of natural pool images. Disagreement alone rewards any image
the members disagree on, and they disagree most on images unlike anything they
were trained on (issue 14: on the default rig the disagreement score
correlated r = 0.85 with RMS contrast and picked almost only gaudy images);
EPIG counts only disagreement that carries over to the reference images.
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

    What the lab wants from a presentation is better predictions of the neurons' responses to natural
    images, not a sharper posterior over parameters that matter nowhere else. EPIG (Smith et al. 2023,
    "Prediction-oriented Bayesian active learning") scores a candidate x by the mutual information
    between the count y it would evoke and the count y* the same neuron gives to a reference image x*,
    averaged over x* drawn from the distribution predictions are wanted for:

        EPIG(x) = E_{x*} [ I(y ; y* | x, x*) ]

    Here `reference_hz` (M, R, N) are the members' rates for R reference images drawn from the natural
    pool (never the held-out test set), and the M members stand in for samples of the posterior over
    the neuron's tuning function f.

    Gaussian approximation (cheap and differentiable). Per neuron, in counts over the response window
    (mean rate times `window_s`), y = f(x) + e and y* = f(x*) + e*, with f drawn from the members and
    e, e* independent count noise of variance F * E[f] (Poisson: F = 1; an overdispersed neuron's Fano
    factor F > 1 makes each count less informative). Then (y, y*) is approximately bivariate normal with

        var y  = var_m f(x)  + F * mean_m f(x)
        var y* = var_m f(x*) + F * mean_m f(x*)
        cov    = cov_m (f(x), f(x*))

    and the mutual information of a bivariate normal with correlation rho is -0.5 log(1 - rho^2). So

        EPIG(x) ~ mean over x* of -0.5 log(1 - rho(x, x*)^2),  rho = cov / sqrt(var y * var y*)

    summed over neurons by `population_score` (neurons taken as independent given the image).
    Properties the tests check: members that agree on x (or on every x*) give exactly 0; a candidate on
    which the members' disagreement co-varies with their disagreement on the references beats one on
    which it does not, even at equal variance (which is where it differs from plain disagreement, which
    rewards any disagreement, e.g. on gaudy images unlike anything the lab wants predicted); and a loud
    neuron's disagreement counts for less, because its counts are noisier.

    A limit of the member estimate: the members' centred predictions live in M - 1 dimensions, so the
    averaged rho^2 is roughly var/(var + noise) on x times how well x's direction of disagreement lines up
    with the references' dominant directions, and with few members (4 by default) every direction lines up
    with some of them. Then EPIG behaves much like a noise-normalised disagreement and still ranks images
    unlike the references (gaudy ones) high when they are candidates; candidates_from = "natural" is what
    keeps them out. More members sharpen it.
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
