"""The objectives that score how well an image discriminates hypotheses."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy, poisson

from stimulus.objectives import (
    controversial,
    disagreement,
    discrimination_score,
    excitation,
    poisson_js,
    poisson_kl,
    population_score,
    predictive_information,
    symmetric_poisson_kl,
)


def test_disagreement_is_zero_when_members_agree_and_grows_with_spread():
    same = torch.full((4, 3, 5), 20.0)
    assert torch.all(disagreement(same) == 0)
    spread = same.clone()
    spread[0] += 10.0
    d = disagreement(spread)
    assert torch.all(d > 0)
    assert torch.allclose(d, torch.full((3, 5), 18.75))  # var of (30, 20, 20, 20)


def test_poisson_kl_matches_closed_form_and_is_zero_on_equal_rates():
    p, q = torch.tensor([10.0]), torch.tensor([20.0])
    t = 0.1
    expected = 2.0 - 1.0 + 1.0 * math.log(1.0 / 2.0)
    assert abs(float(poisson_kl(p, q, t)) - expected) < 1e-5
    assert float(poisson_kl(q, q, t)) == 0.0


def test_js_is_larger_where_rates_differ_at_low_noise():
    # The same 5 Hz difference: at 2 vs 7 Hz the counts are far apart for their noise; at 80 vs 85 Hz they overlap.
    low = torch.tensor([2.0, 7.0]).view(2, 1, 1)
    high = torch.tensor([80.0, 85.0]).view(2, 1, 1)
    js_low, js_high = float(poisson_js(low, 0.2)), float(poisson_js(high, 0.2))
    assert js_low > 3 * js_high > 0
    # Bounded by the prior's entropy: log 2 for two equal hypotheses, reached when they cannot overlap.
    far = torch.tensor([0.001, 500.0]).view(2, 1, 1)
    assert abs(float(poisson_js(far, 0.2)) - math.log(2)) < 1e-3
    assert float(poisson_js(torch.full((2, 1, 1), 30.0), 0.2)) < 1e-6


def test_js_equals_the_entropy_of_the_mixture_less_the_mean_entropy():
    # Computed independently from scipy's Poisson pmf: JS = H(sum_m w_m P_m) - sum_m w_m H(P_m).
    rates, window, w = np.array([3.0, 12.0, 40.0]), 0.25, np.array([0.5, 0.3, 0.2])
    k = np.arange(200)
    pmf = poisson.pmf(k[None], rates[:, None] * window)
    mixture = w @ pmf
    expected = entropy(mixture) - sum(wm * entropy(pm) for wm, pm in zip(w, pmf))
    got = float(poisson_js(torch.tensor(rates, dtype=torch.float64).view(3, 1, 1), window, weights=w.tolist()))
    assert abs(got - expected) < 1e-9, (got, expected)


def test_js_with_a_settled_posterior_gives_little_information():
    rates = torch.tensor([5.0, 40.0]).view(2, 1, 1)
    even = float(poisson_js(rates, 0.15))
    settled = float(poisson_js(rates, 0.15, weights=[0.999, 0.001]))
    assert settled < even / 20


def test_js_gradient_points_towards_more_difference():
    rates = torch.tensor([10.0, 12.0]).view(2, 1, 1).requires_grad_(True)
    poisson_js(rates, 0.2).sum().backward()
    assert rates.grad[0] < 0 < rates.grad[1]
    assert float(symmetric_poisson_kl(torch.tensor([10.0, 12.0]).view(2, 1, 1), 0.2)) > 0


def test_controversial_sign_follows_which_hypothesis_predicts_high():
    a = torch.tensor([[40.0, 5.0]])
    b = torch.tensor([[5.0, 40.0]])
    c = controversial(a, b)
    assert c[0, 0] > 0 > c[0, 1]
    assert torch.allclose(c, -controversial(b, a))
    ck = controversial(a, b, window_s=0.1)
    assert ck[0, 0] > 0 > ck[0, 1]


def test_excitation_population_weights_and_named_objectives():
    rates = torch.tensor([[[10.0, 2.0]], [[20.0, 4.0]]])  # (M=2, B=1, N=2)
    assert torch.allclose(excitation(rates), torch.tensor([[15.0, 3.0]]))
    per = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.allclose(population_score(per), torch.tensor([3.0, 7.0]))
    assert torch.allclose(population_score(per, [1.0, 0.0]), torch.tensor([1.0, 3.0]))
    # The rig file's objective names, each with values worked out by hand for members (10, 20) Hz and (2, 4) Hz:
    # "disagreement" is the variance over the mean rate (25 / 15 and 1 / 3) ...
    assert torch.allclose(discrimination_score(rates, "disagreement", 0.15), torch.tensor([[25 / 15, 1 / 3]]))
    # ... "kl" the symmetrised Poisson KL on 150 ms counts: (KL(1.5||3) + KL(3||1.5)) / 2 = (3 - 1.5) ln 2 / 2 ...
    kl = discrimination_score(rates, "kl", 0.15)
    assert torch.allclose(kl, torch.tensor([[0.75 * math.log(2), 0.15 * math.log(2)]]), atol=1e-6)
    # ... and "js" the Jensen-Shannon divergence, with the posterior's weights passed on.
    assert torch.allclose(discrimination_score(rates, "js", 0.15), poisson_js(rates, 0.15))
    weighted = discrimination_score(rates, "js", 0.15, weights=[0.9, 0.1])
    assert torch.allclose(weighted, poisson_js(rates, 0.15, weights=[0.9, 0.1]))
    assert torch.all(weighted < discrimination_score(rates, "js", 0.15))
    with pytest.raises(ValueError, match="bogus"):
        discrimination_score(rates, "bogus", 0.15)


# ----------------------------------------------------------------------------- EPIG


def members(*deviations, base=20.0):
    """Rates (M, images, 1 neuron): base + deviation of each member, one tuple of member deviations per image."""
    return (base + torch.tensor(deviations, dtype=torch.float64).T).unsqueeze(-1)


def test_epig_is_zero_when_members_agree_on_the_candidate_or_on_every_reference():
    ref = members((4.0, -4.0, 2.0, -2.0), (1.0, 3.0, -3.0, -1.0))
    agree = members((0.0, 0.0, 0.0, 0.0))
    assert float(predictive_information(agree, ref, 0.15).abs().max()) < 1e-12
    # Members that disagree on the candidate but agree on every reference: nothing to learn about the references.
    cand = members((6.0, -6.0, 3.0, -3.0))
    flat_ref = members((0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0))
    assert float(predictive_information(cand, flat_ref, 0.15).abs().max()) < 1e-12


def test_epig_prefers_disagreement_that_co_varies_with_the_references_at_equal_variance():
    ref = members((5.0, -5.0, 0.0, 0.0), (4.0, -4.0, 1.0, -1.0))
    covaries = members((6.0, -6.0, 0.0, 0.0))
    unrelated = members((0.0, 0.0, 6.0, -6.0))  # same spread across members, in directions the references lack
    both = torch.cat([covaries, unrelated], 1)
    e = predictive_information(both, ref, 0.15)[:, 0]
    d = disagreement(both)[:, 0]
    assert torch.allclose(d[0], d[1])  # plain disagreement cannot tell them apart
    assert e[0] > 5 * e[1] > 0


def test_epig_matches_the_bivariate_normal_information_by_hand():
    # Two members, one neuron, one reference: counts (y) in a 0.2 s window.
    window, fano = 0.2, 1.5
    cand = members((10.0, -10.0), base=40.0)  # counts 10 and 6: mean 8, member variance 4
    ref = members((-5.0, 5.0), base=25.0)  # counts 4 and 6: mean 5, member variance 1, cov with cand -2
    var_y, var_ys, cov = 4.0 + fano * 8.0, 1.0 + fano * 5.0, -2.0
    rho2 = cov**2 / (var_y * var_ys)
    expected = -0.5 * math.log(1.0 - rho2)
    got = float(predictive_information(cand, ref, window, fano_factor=fano))
    assert abs(got - expected) < 1e-9
    # Averaged over references: a second, flat reference halves it.
    two = torch.cat([ref, members((0.0, 0.0), base=25.0)], 1)
    assert abs(float(predictive_information(cand, two, window, fano_factor=fano)) - expected / 2) < 1e-9


def test_epig_counts_noisier_neurons_and_overdispersion_for_less():
    ref = members((4.0, -4.0, 2.0, -2.0))
    cand = members((4.0, -4.0, 2.0, -2.0))
    poisson = float(predictive_information(cand, ref, 0.15, fano_factor=1.0))
    over = float(predictive_information(cand, ref, 0.15, fano_factor=2.0))
    assert poisson > over > 0
    loud = float(predictive_information(cand + 60.0, ref + 60.0, 0.15))  # same spread, higher mean: noisier counts
    assert poisson > loud > 0


def test_epig_is_differentiable_and_named_in_the_rig_objectives():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    rates = torch.stack([20 + 5 * x, 20 - 5 * x, 20 + x, 20 - x]).view(4, 2, 1)  # (M, B, 1)
    ref = members((4.0, -4.0, 1.0, -1.0)).float()
    score = discrimination_score(rates, "epig", 0.15, reference_hz=ref, fano_factor=1.2)
    score.sum().backward()
    assert x.grad is not None and torch.all(x.grad > 0)  # more of the co-varying spread: more information
    with pytest.raises(ValueError, match="reference"):
        discrimination_score(rates.detach(), "epig", 0.15)
    with pytest.raises(ValueError, match="do not match"):
        predictive_information(rates.detach(), ref[:2], 0.15)


def test_excitation_with_a_spread_penalty_prefers_the_image_members_agree_on():
    rates = torch.tensor([[50.0, 40.0], [10.0, 40.0]]).view(2, 2, 1)  # image 0: mean 30, sd 20; image 1: 40, sd 0
    pen = excitation(rates, spread_penalty=1.0)[:, 0]
    assert abs(float(pen[0]) - 10.0) < 1e-3 and abs(float(pen[1]) - 40.0) < 1e-3
    wild = torch.tensor([[90.0, 40.0], [10.0, 40.0]]).view(2, 2, 1)  # image 0: mean 50 > 40, but sd 40
    assert excitation(wild)[0, 0] > excitation(wild)[1, 0]
    assert excitation(wild, spread_penalty=1.0)[0, 0] < excitation(wild, spread_penalty=1.0)[1, 0]
