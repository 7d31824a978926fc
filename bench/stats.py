"""The statistics the benchmarks report: bootstrap intervals over paired seeds, trials-to-target with runs that
never get there, and intervals for how often something happens over repeated runs.

Pure numpy/scipy, no sessions: tested on cases whose answer is known (tests/bench/test_bench_stats.py).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as _st

# A stand-in for "never reached" while percentiles are taken (np.percentile interpolates inf into nan);
# anything at or above NEVER_CUT afterwards is reported as infinite again.
_NEVER = 1e12
_NEVER_CUT = 1e11


def bootstrap_ci(values, stat=np.mean, level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat` over the values (seeds are the unit that is resampled).

    Infinite values (a run that never reached a target) are allowed with a rank statistic such as the
    median: the interval's end is then infinite where more than its share of resamples land there.
    One value gives a zero-width interval at that value; none gives (nan, nan)."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    finite_v = np.where(np.isinf(v), np.sign(v) * _NEVER, v)
    if v.size == 1:
        return _back(float(stat(finite_v))), _back(float(stat(finite_v)))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, (n_boot, v.size))
    boots = np.asarray(stat(finite_v[idx], axis=1), np.float64)
    tail = (1.0 - level) / 2 * 100
    lo, hi = np.percentile(boots, [tail, 100 - tail])
    return _back(float(lo)), _back(float(hi))


def _back(x: float) -> float:
    if x >= _NEVER_CUT:
        return math.inf
    if x <= -_NEVER_CUT:
        return -math.inf
    return x


def median_with_inf(values) -> float:
    """The median where infinite values count as larger than any finite one."""
    v = np.asarray(values, np.float64)
    return _back(float(np.median(np.where(np.isinf(v), np.sign(v) * _NEVER, v))))


def trials_to_reach(trials, values, target: float) -> int | None:
    """First evaluated trial count at which `values` reaches `target`; None if it never does within the run."""
    for t, v in zip(trials, values):
        if v >= target:
            return int(t)
    return None


def paired_ratios(numerator: list[int | None], denominator: list[int | None]) -> list[float]:
    """Per seed: numerator / denominator of trials-to-target. A numerator that never reached the target is
    +inf (it would need more trials than the run had: no finite ratio is honest); a denominator that never
    reached it makes the pair undefined (nan), which callers leave out and count."""
    out = []
    for a, b in zip(numerator, denominator):
        if b is None or b <= 0:
            out.append(float("nan"))
        elif a is None:
            out.append(math.inf)
        else:
            out.append(a / b)
    return out


def area_under_curve(trials, values) -> float:
    """Mean of the curve over its trial range (trapezoid area / range): a learning curve's height, in the
    curve's own units, comparable between arms evaluated at the same trials."""
    t = np.asarray(trials, np.float64)
    v = np.asarray(values, np.float64)
    if t.size == 0:
        return float("nan")
    if t.size == 1 or t[-1] == t[0]:
        return float(v.mean())
    return float(np.sum((v[1:] + v[:-1]) / 2 * np.diff(t)) / (t[-1] - t[0]))


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (conservative) binomial interval for k successes in n runs."""
    if n <= 0:
        return float("nan"), float("nan")
    a = 1.0 - level
    lo = 0.0 if k == 0 else float(_st.beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(_st.beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n runs."""
    if n <= 0:
        return float("nan"), float("nan")
    z = float(_st.norm.ppf(1 - (1 - level) / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
