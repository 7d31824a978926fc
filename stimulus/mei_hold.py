"""Do a neuron's MEIs hold on the neuron? Observed over predicted rates, and more cautious MEIs where they fall short.

An MEI's plan records the rate the model predicted when it chose it (`mei neuron#4 predicted 61.2Hz ...`); the
recorded counts of its presentations, divided by the response window, are what it evoked. Per neuron, the ratio is
the mean observed rate over the mean predicted rate of its MEI presentations (a ratio of means, so a single
presentation with no spikes does not set it to zero). A model that extrapolates beyond its data predicts rates the
neuron never gives: the ratio falls below one.

With `selection.mei_hold_below = L` set, a neuron whose ratio is below L (on at least MIN_PRESENTATIONS of its MEI
presentations) gets cautious MEIs: caution level k = 1 + floor(log2(L / ratio)), at most 3 (1 just below L, 2 from
L/2, 3 from L/4 down); a
cautious MEI takes mei_steps / 2**k gradient steps (at least one) and penalises the members' disagreement k + 1
times as hard (`mei_spread_penalty` x (k + 1), or k where that is zero): it stays nearer its natural start and
inside what the ensemble agrees on. The natural range (contrast_bound) applies at every level.
"""

from __future__ import annotations

import math
import re

import numpy as np

MEI_REASON = re.compile(r"mei neuron#(\d+) predicted ([-\d.]+)Hz")
MIN_PRESENTATIONS = 2
MAX_CAUTION = 3


def observed_over_predicted(reasons, counts, window_s: float, valid=None) -> dict[int, dict]:
    """Per neuron with MEI presentations: {"presentations", "observed_hz", "predicted_hz", "ratio"} from the
    presentations' reasons (as stored with the plans), their counts (n, N) and the window's length in seconds.
    valid: the presentations to count (all if None)."""
    sums: dict[int, list] = {}
    for k, reason in enumerate(reasons):
        if valid is not None and not valid[k]:
            continue
        hit = MEI_REASON.search(reason or "")
        if hit is None:
            continue
        j = int(hit.group(1))
        row = sums.setdefault(j, [0.0, 0.0, 0])
        row[0] += float(counts[k][j]) / window_s
        row[1] += float(hit.group(2))
        row[2] += 1
    return {j: summarize(*row) for j, row in sorted(sums.items())}


def summarize(observed_sum_hz: float, predicted_sum_hz: float, n: int) -> dict:
    ratio = observed_sum_hz / predicted_sum_hz if predicted_sum_hz > 0 else float("nan")
    return {
        "presentations": int(n),
        "observed_hz": observed_sum_hz / n,
        "predicted_hz": predicted_sum_hz / n,
        "ratio": ratio,
    }


def median_ratio(per_neuron: dict[int, dict]) -> float | None:
    """The median over neurons of their ratios (None where no neuron has one)."""
    r = [v["ratio"] for v in per_neuron.values() if v["ratio"] is not None and math.isfinite(v["ratio"])]
    return float(np.median(r)) if r else None


def caution(entry: dict | None, level: float | None) -> int:
    """0 (the rig's settings) up to MAX_CAUTION for a neuron's entry of observed_over_predicted."""
    if level is None or entry is None or entry["presentations"] < MIN_PRESENTATIONS:
        return 0
    ratio = entry["ratio"]
    if not math.isfinite(ratio) or ratio >= level:
        return 0
    return min(MAX_CAUTION, 1 + int(math.floor(math.log2(level / max(ratio, 1e-9)))))


def cautious_settings(steps: int, spread_penalty: float, k: int) -> tuple[int, float]:
    """(gradient steps, spread penalty) of an MEI at caution level k."""
    if k <= 0:
        return steps, spread_penalty
    return (max(1, steps >> k) if steps > 0 else 0), (spread_penalty * (k + 1) if spread_penalty > 0 else float(k))
