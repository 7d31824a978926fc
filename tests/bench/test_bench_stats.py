"""The benchmarks' statistics on cases whose answer is known."""

import math

import numpy as np
import pytest

from bench.stats import (
    area_under_curve,
    bootstrap_ci,
    clopper_pearson,
    median_with_inf,
    paired_ratios,
    trials_to_reach,
    wilson,
)


def test_bootstrap_interval_of_the_mean_covers_the_truth_at_about_its_level():
    # 400 experiments of 12 normal draws: the 95% percentile bootstrap interval of the mean should cover the
    # true mean about 95% of the time (percentile intervals run a little narrow at n = 12: accept 88-99%).
    rng = np.random.default_rng(1)
    hits = 0
    for k in range(400):
        lo, hi = bootstrap_ci(rng.normal(3.0, 2.0, 12), n_boot=2000, seed=k)
        hits += lo <= 3.0 <= hi
    assert 0.88 <= hits / 400 <= 0.99, hits


def test_bootstrap_interval_width_matches_the_standard_error():
    v = np.random.default_rng(2).normal(0.0, 1.0, 200)
    lo, hi = bootstrap_ci(v)
    se = v.std(ddof=1) / math.sqrt(len(v))
    assert lo < v.mean() < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_bootstrap_edge_cases():
    assert bootstrap_ci([0.4]) == (0.4, 0.4)
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_never_reached_runs_make_the_median_and_its_interval_infinite_only_where_they_dominate():
    # 2 of 10 never reached: the median and the interval's low end stay finite, the high end may not.
    v = [1, 2, 3, 4, 5, 6, 7, 8, math.inf, math.inf]
    assert median_with_inf(v) == 5.5
    lo, hi = bootstrap_ci(v, np.median)
    assert math.isfinite(lo) and lo <= 5.5 <= hi
    # 7 of 10 never reached: the median is "never", and so is the interval's high end.
    v = [1, 2, 3] + [math.inf] * 7
    assert median_with_inf(v) == math.inf
    assert bootstrap_ci(v, np.median)[1] == math.inf
    # The mean of a set with a never-reached run is infinite, not some large number.
    assert bootstrap_ci([1.0, math.inf], np.mean)[1] == math.inf


def test_trials_to_reach_the_first_evaluation_at_or_above_the_target():
    trials = [10, 20, 30, 40]
    assert trials_to_reach(trials, [0.1, 0.3, 0.25, 0.5], 0.3) == 20
    assert trials_to_reach(trials, [0.1, 0.3, 0.25, 0.5], 0.45) == 40
    assert trials_to_reach(trials, [0.1, 0.3, 0.25, 0.5], 0.6) is None  # never within the budget


def test_paired_ratios_never_reached_is_infinite_and_an_undefined_denominator_is_nan():
    r = paired_ratios([20, None, 30, 10], [40, 40, None, 20])
    assert r[0] == 0.5 and r[1] == math.inf and math.isnan(r[2]) and r[3] == 0.5


def test_area_under_curve_is_the_mean_height():
    assert area_under_curve([0, 10, 20], [0.0, 0.5, 1.0]) == pytest.approx(0.5)
    assert area_under_curve([10, 20, 40], [0.2, 0.2, 0.2]) == pytest.approx(0.2)
    # Uneven spacing is weighted by the trials between evaluations.
    assert area_under_curve([0, 10, 40], [0.0, 1.0, 1.0]) == pytest.approx((5 + 30) / 40)


def test_binomial_intervals_on_known_values():
    # Clopper-Pearson, 0 of 10: the upper end is 1 - 0.025^(1/10) (exact).
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025**0.1, rel=1e-6)
    lo, hi = clopper_pearson(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.025**0.1, rel=1e-6)
    # Wilson, 5 of 10: symmetric about 0.5, z = 1.96: 0.2366..0.7634.
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    # Both cover the observed rate and Clopper-Pearson is the wider (conservative) one.
    for k, n in [(1, 20), (3, 8), (19, 20)]:
        c, w = clopper_pearson(k, n), wilson(k, n)
        assert c[0] <= k / n <= c[1] and w[0] <= k / n <= w[1]
        assert c[1] - c[0] >= w[1] - w[0]
