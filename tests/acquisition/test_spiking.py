"""Spikes from rates: Fano factor, latency, time course, refractoriness, drift, lost units, noise ceiling."""

import time

import numpy as np

from acquisition.config import PopulationConfig, SpikingConfig
from acquisition.ground_truth import noise_ceiling, simulate_counts
from acquisition.neurons import natural_patches
from acquisition.population import Population
from acquisition.spiking import SpikingModel

GAP_S = 0.5


def run_repeats(cfg, base, rates, reps, seed=1, chunk_s=None):
    """The same rates presented `reps` times, GAP_S apart; returns the model and all spikes."""
    m = SpikingModel(cfg, base, seed)
    nn, tt = [], []
    for r in range(reps):
        m.add_onset(r * GAP_S + 0.1, rates)
        end = (r + 1) * GAP_S
        if chunk_s is None:
            out = [m.advance(end)]
        else:
            out = [m.advance(t) for t in np.arange(r * GAP_S + chunk_s, end + 1e-9, chunk_s)]
        for a, b in out:
            nn.append(a)
            tt.append(b)
    return m, np.concatenate(nn), np.concatenate(tt)


def response_counts(m, neuron, time_s, reps, dur_s):
    onsets = np.arange(reps) * GAP_S + 0.1
    idx = np.floor(time_s / GAP_S).astype(int)
    rel = time_s - onsets[idx] - m.latency_s[neuron]
    inside = (rel >= 0) & (rel < dur_s)
    counts = np.zeros((reps, m.n))
    np.add.at(counts, (idx[inside], neuron[inside]), 1)
    return counts


def test_counts_have_the_configured_mean_and_fano_factor():
    n, reps = 20, 400
    base = np.full(n, 5.0)
    rates = np.linspace(15, 90, n)
    for fano in (1.0, 1.5):
        cfg = SpikingConfig(fano_factor=fano)
        m, nn, tt = run_repeats(cfg, base, rates, reps)
        c = response_counts(m, nn, tt, reps, cfg.response_duration_ms / 1000)
        assert np.allclose(c.mean(0), rates * 0.15, rtol=0.1)
        measured = c.var(0) / c.mean(0)
        assert abs(np.mean(measured) - fano) < 0.12, (fano, measured)


def test_latency_and_transient_then_sustained_time_course():
    n, reps = 6, 300
    base = np.full(n, 4.0)
    rates = np.full(n, 80.0)
    cfg = SpikingConfig(latency_ms=(50, 80), transient_ratio=3.0, fano_factor=1.0)
    m, nn, tt = run_repeats(cfg, base, rates, reps)
    assert np.all((m.latency_s >= 0.05) & (m.latency_s <= 0.08))
    onsets = np.arange(reps) * GAP_S + 0.1
    rel = tt - onsets[np.floor(tt / GAP_S).astype(int)] - m.latency_s[nn]
    per = lambda a, b: np.sum((rel >= a) & (rel < b)) / (reps * n * (b - a))  # noqa: E731
    before, early, late = per(-0.02, 0.0), per(0.005, 0.035), per(0.10, 0.15)
    assert abs(before - 4.0) < 1.5  # nothing before the latency
    assert early > 1.5 * late  # onset transient
    assert late > 2 * before  # sustained response


def test_suppressed_rates_go_below_baseline_and_refractory_period_holds():
    n, reps = 4, 200
    base = np.array([10.0, 10.0, 10.0, 10.0])
    rates = np.array([1.0, 10.0, 40.0, 100.0])  # the transient peaks near 170 spikes/s
    cfg = SpikingConfig(refractory_ms=2.0)
    m, nn, tt = run_repeats(cfg, base, rates, reps)
    c = response_counts(m, nn, tt, reps, 0.15)
    assert c[:, 0].mean() < 0.4 * c[:, 1].mean()
    assert np.allclose(c.mean(0), rates * 0.15, rtol=0.12, atol=0.08)  # rate kept despite dead time
    for i in range(n):
        assert np.min(np.diff(tt[nn == i])) >= 0.002 - 1e-12


def test_realtime_chunks_and_one_call_per_trial_agree():
    n, reps = 10, 150
    base = np.full(n, 5.0)
    rates = np.linspace(10, 60, n)
    cfg = SpikingConfig()
    m1, n1, t1 = run_repeats(cfg, base, rates, reps, seed=3)
    m2, n2, t2 = run_repeats(cfg, base, rates, reps, seed=4, chunk_s=0.02)
    assert np.all(np.diff(t2) >= 0) and np.all(np.diff(t1) >= 0)
    c1 = response_counts(m1, n1, t1, reps, 0.15).mean(0)
    c2 = response_counts(m2, n2, t2, reps, 0.15).mean(0)
    assert np.allclose(c1, c2, rtol=0.15, atol=0.3)
    # Each call returns spikes only from [previous end, this end).
    m = SpikingModel(cfg, base, 0)
    m.add_onset(0.05, rates)
    a_n, a_t = m.advance(0.1)
    b_n, b_t = m.advance(0.2)
    assert len(a_t) > 0 and len(b_t) > 0  # both windows hold spikes, so the bounds below test something
    assert 0 <= a_t.min() and a_t.max() < 0.1 and 0.1 <= b_t.min() and b_t.max() < 0.2
    assert b_n.dtype == np.uint16 and len(a_n) == len(a_t) and len(b_n) == len(b_t) and b_n.max() < n


def test_lost_units_fall_silent_and_drift_changes_gain():
    n = 8
    base = np.full(n, 8.0)
    cfg = SpikingConfig(n_lost_neurons=2, lost_window_s=(1.0, 2.0), gain_drift_sd=0.5, gain_drift_timescale_s=5.0)
    m = SpikingModel(cfg, base, 2)
    lost = np.flatnonzero(np.isfinite(m.lost_at_s))
    assert len(lost) == 2 and np.all((m.lost_at_s[lost] >= 1.0) & (m.lost_at_s[lost] <= 2.0))
    gains = []
    nn, tt = [], []
    for k in range(60):
        m.add_onset(k * 0.5, np.full(n, 40.0))
        gains.append(m._on_gain[-1].copy())
        a, b = m.advance((k + 1) * 0.5)
        nn.append(a)
        tt.append(b)
    nn, tt = np.concatenate(nn), np.concatenate(tt)
    for i in lost:
        assert not np.any(tt[nn == i] >= m.lost_at_s[i])
        assert np.any(tt[nn == i] < m.lost_at_s[i])
    # Drift: log gains wander with about the configured spread.
    assert 0.2 < np.std(np.log(np.array(gains))) < 1.0


def test_noise_ceiling_matches_simulated_counts():
    pop = Population(PopulationConfig(n_neurons=12, seed=1, calibration_images=64), 32, True)
    imgs = natural_patches(150, 32, True, seed=21)
    cfg = SpikingConfig(fano_factor=1.3)
    ceiling = noise_ceiling(pop, cfg, imgs, (0.05, 0.2), seed=5)
    counts = simulate_counts(pop, cfg, imgs, (0.05, 0.2), seed=5, n_repeats=2)
    rates = pop.rates(imgs)
    emp = np.array([[np.corrcoef(counts[k, :, i], rates[:, i])[0, 1] for i in range(12)] for k in range(2)]).mean(0)
    assert np.all((ceiling > 0) & (ceiling < 1))
    assert np.max(np.abs(ceiling - emp)) < 0.12, (ceiling, emp)
    # More repeats, higher ceiling.
    assert np.all(noise_ceiling(pop, cfg, imgs, (0.05, 0.2), seed=5, n_repeats=4) > ceiling)


def test_advance_is_fast_for_hundreds_of_neurons():
    n = 300
    m = SpikingModel(SpikingConfig(), np.full(n, 6.0), 0)
    rates = np.random.default_rng(0).uniform(0, 80, n)
    t0 = time.perf_counter()
    for k in range(50):  # 50 onsets, advanced in 20 ms steps: 10 s of session
        m.add_onset(k * 0.2, rates)
        for j in range(10):
            m.advance(k * 0.2 + (j + 1) * 0.02)
    assert time.perf_counter() - t0 < 15.0  # ~0.3 s on an idle 2-core machine; 5.5 s seen at load 20
