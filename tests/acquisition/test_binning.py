"""Spike binning per presentation: window edges, completion by the stream's clock, bounded memory."""

import numpy as np
import pytest

from acquisition.alignment import fit_clock
from acquisition.binning import SpikeRecord, count_in_windows


def test_half_open_windows_include_start_exclude_end():
    neuron = np.array([0, 0, 0, 1], np.uint16)
    times = np.array([1.0, 1.5, 2.0, 1.999])
    counts = count_in_windows(neuron, times, np.array([1.0]), np.array([2.0]), 2)
    assert counts.tolist() == [[2, 1]]


def test_overlapping_windows_count_the_same_spike_twice():
    counts = count_in_windows(np.array([0], np.uint16), np.array([1.2]), np.array([1.0, 1.1]), np.array([1.3, 1.4]), 1)
    assert counts[:, 0].tolist() == [1, 1]


def test_no_spikes_no_windows_and_silent_neurons():
    assert count_in_windows(np.zeros(0, np.uint16), np.zeros(0), np.array([0.0]), np.array([1.0]), 3).tolist() == [
        [0, 0, 0]
    ]
    assert count_in_windows(np.array([2], np.uint16), np.array([0.5]), np.zeros(0), np.zeros(0), 3).shape == (0, 3)


def test_unsorted_batches_from_several_messages():
    rec = SpikeRecord(2)
    rec.add(np.array([1, 0], np.uint16), np.array([0.30, 0.10]), clock_s=0.4)
    rec.add(np.array([0], np.uint16), np.array([0.05]), clock_s=0.5)  # a late spike earlier in time
    assert rec.counts(np.array([0.0]), np.array([0.5])).tolist() == [[2, 1]]


def test_window_is_complete_only_when_the_stream_clock_passed_its_end():
    rec = SpikeRecord(1)
    rec.add(np.array([0], np.uint16), np.array([0.10]), clock_s=0.2)
    assert not rec.complete(0.25)
    rec.advance(0.25)  # a heartbeat carrying the stream's clock
    assert rec.complete(0.25)
    rec.advance(0.1)  # the clock never goes back
    assert rec.clock_s == 0.25


def test_spike_from_unknown_neuron_is_refused():
    with pytest.raises(ValueError, match="neuron 5"):
        SpikeRecord(3).add(np.array([5], np.uint16), np.array([0.1]), clock_s=1.0)


def test_forget_before_bounds_memory_but_keeps_open_windows():
    rec = SpikeRecord(1)
    rec.add(np.zeros(3, np.uint16), np.array([0.1, 0.2, 0.9]), clock_s=1.0)
    rec.forget_before(0.5)
    assert rec.counts(np.array([0.0]), np.array([1.0])).tolist() == [[1]]


def test_clock_fit_recovers_offset_and_drift():
    rng = np.random.default_rng(0)
    p = np.sort(rng.uniform(0, 3600, 500))
    a = 12.5 + (1 + 20e-6) * p + rng.normal(0, 1e-4, len(p))
    fit = fit_clock(p, a)
    assert fit.offset_s == pytest.approx(12.5, abs=1e-3)
    assert fit.drift_ppm == pytest.approx(20.0, abs=0.5)
    assert fit.residual_rms_s == pytest.approx(1e-4, rel=0.2)


def test_clock_fit_needs_pairs():
    with pytest.raises(ValueError):
        fit_clock(np.zeros(0), np.zeros(0))
    assert fit_clock(np.array([1.0]), np.array([3.0])).offset_s == 2.0
