"""The objectives that score how well an image discriminates hypotheses."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy, poisson

from stimulus.objectives import (controversial, disagreement, discrimination_score, excitation, poisson_js,
                                 poisson_kl, population_score, symmetric_poisson_kl)


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
