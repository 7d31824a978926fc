"""The session summary's noise ceilings (truth and repeats) and training steps per trial."""

import json

import numpy as np

from acquisition.config import SpikingConfig
from acquisition.ground_truth import simulate_counts
from bench.sessions import bench_rig
from records.summary import format_table, noise_ceilings, repeat_noise_ceiling


class TwoLevels:
    """Three neurons whose true rate is one of two levels, set by the image's first pixel being even or odd:
    a strong one, a weak one, and one that never changes (no signal: its ceiling is 0)."""

    n_neurons = 3
    baseline_hz = np.array([5.0, 5.0, 5.0])
    levels = np.array([[10.0, 80.0], [8.0, 25.0], [20.0, 20.0]])  # (neuron, level) in spikes/s

    def rates(self, images):
        odd = (images[:, 0, 0, 0].astype(int) % 2).astype(int)
        return self.levels[np.arange(3)[None, :], odd[:, None]]


def test_truth_ceiling_is_what_single_presentation_counts_reach_on_a_known_case():
    pop = TwoLevels()
    images = np.zeros((300, 8, 8, 3), np.uint8)
    images[1::2, 0, 0, 0] = 1  # half the images at each level
    rig = bench_rig(cortex={"spiking": {"fano_factor": 1.5, "refractory_ms": 0.0}})
    ceil = noise_ceilings(rig, pop.rates, images, None, None)
    got = np.array(ceil["truth"]["per_neuron"])
    # The same spiking model, run for real: the correlation of one presentation's count with the true rate.
    counts = simulate_counts(
        pop, rig.cortex.spiking, images, (0.05, 0.2), seed=rig.cortex.population.seed + 1, n_repeats=4
    )
    rates = pop.rates(images)
    emp = np.array([np.mean([np.corrcoef(counts[k, :, i], rates[:, i])[0, 1] for k in range(4)]) for i in range(2)])
    np.testing.assert_allclose(got[:2], emp, atol=0.06)
    assert got[0] > 0.8 and 0.2 < got[1] < 0.7  # strong and weak neuron, far apart
    assert got[2] < 1e-6  # no signal, no ceiling
    assert ceil["truth"]["median"] == float(np.median(got)) and ceil["repeats"] is None
    assert "held-out" in ceil["truth"]["what"]


def test_repeats_ceiling_agrees_with_the_truth_where_both_are_known():
    pop = TwoLevels()
    images = np.zeros((40, 8, 8, 3), np.uint8)
    images[1::2, 0, 0, 0] = 1
    images[:, 1, 1, 0] = np.arange(40)  # 40 distinct images (distinct hashes)
    rig = bench_rig(cortex={"spiking": {"fano_factor": 1.0, "refractory_ms": 0.0}})
    counts = simulate_counts(
        pop,
        SpikingConfig(fano_factor=1.0, refractory_ms=0.0),
        images,
        (0.05, 0.2),
        seed=rig.cortex.population.seed + 1,
        n_repeats=12,
    )
    stored = {"image_hash": [f"img{j}" for _ in range(12) for j in range(40)], "counts": counts.reshape(-1, 3)}
    ceil = noise_ceilings(rig, pop.rates, images, stored, None)
    rep, truth = ceil["repeats"], ceil["truth"]
    assert rep["images"] == 40 and rep["presentations"] == 480
    assert abs(rep["per_neuron"][0] - truth["per_neuron"][0]) < 0.06
    assert abs(rep["per_neuron"][1] - truth["per_neuron"][1]) < 0.12
    assert rep["per_neuron"][2] < 0.25  # no signal: the estimate stays near 0
    # Images shown once say nothing about noise.
    assert repeat_noise_ceiling([f"x{i}" for i in range(40)], counts[0]) is None


def test_session_summary_reports_both_ceilings_next_to_heldout_accuracy_and_steps_per_trial(tmp_path):
    from controller.session import run_in_process, summary_from_store

    rig = bench_rig(
        session={"n_trials": 8, "seed": 2},
        images={"size_px": 16, "pool_size": 60, "test_size": 20, "seed": 2},
        cortex={"population": {"n_neurons": 4, "seed": 2}},
        model={"kind": "baseline", "steps_per_trial": 3},
        selection={"mix": {"random": 0.5, "repeat": 0.5}, "repeat_set_size": 4, "hypotheses": []},
    )
    summary, _ = run_in_process(rig, tmp_path / "s")
    assert len(summary["heldout_r_per_neuron"]) == 4
    truth, rep = summary["noise_ceiling"]["truth"], summary["noise_ceiling"]["repeats"]
    assert len(truth["per_neuron"]) == 4 and all(0 <= c < 1 for c in truth["per_neuron"]) and truth["images"] == 20
    # 8 trials x 5 images, half of them repeats; a random slot may draw one of the 4 again from the 60-image pool
    assert rep["images"] == 4 and 20 <= rep["presentations"] <= 24
    assert summary["noise_ceiling_truth_median"] == truth["median"]
    assert summary["training_steps_per_trial_budget"] == 3
    assert 0 < summary["training_steps_per_trial"] <= 3  # no training before the model has enough responses
    assert summary["training_steps_per_trial"] == summary["model"]["training_steps"] / summary["trials_done"]
    table = format_table(summary)
    assert "noise ceiling, median (truth)" in table and "noise ceiling (repeats)" in table
    json.loads((tmp_path / "s" / "summary.json").read_text())["noise_ceiling"]["truth"]
    # Rebuilt from the store alone (a controller that died): the repeats' ceiling is still there.
    again = summary_from_store(rig, tmp_path / "s", "completed")
    assert again["noise_ceiling"]["repeats"]["per_neuron"] == rep["per_neuron"]
