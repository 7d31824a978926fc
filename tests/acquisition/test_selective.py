"""Selective neuron types: few natural images drive them, and population.sparseness sets how few."""

import numpy as np

from acquisition.config import SELECTIVE_TYPES, PopulationConfig
from acquisition.neurons import natural_patches
from acquisition.population import Population, sparseness
from controller.config import load_rig

SIZE = 32
ZOO = {"oriented": 1, "curvature": 1, "texture": 1, "cnn": 1}
SELECTIVE = {t: 1 for t in SELECTIVE_TYPES}


def _sparseness(shares, sparse=0.03, seed=3):
    cfg = PopulationConfig(n_neurons=12, seed=seed, type_shares=shares, sparseness=sparse, calibration_images=128)
    pop = Population(cfg, SIZE, True)
    images = natural_patches(300, SIZE, True, seed=11)  # natural images the gain was not calibrated on
    return pop, sparseness(pop.rates(images), pop.baseline_hz)


def test_selective_types_respond_to_few_natural_images():
    _, zoo = _sparseness(ZOO)
    pop, sel = _sparseness(SELECTIVE)
    assert set(pop.types) == set(SELECTIVE_TYPES)
    assert np.median(sel) < 0.05
    assert np.median(sel) < 0.5 * np.median(zoo)
    # Not silent: each selective neuron's best natural image drives it well above baseline.
    rates = pop.rates(natural_patches(300, SIZE, True, seed=11))
    assert np.all(rates.max(0) > pop.baseline_hz + 5.0)


def test_sparseness_key_sets_how_many_images_drive_them():
    _, sparse = _sparseness(SELECTIVE, sparse=0.01)
    _, dense = _sparseness(SELECTIVE, sparse=0.3)
    assert np.median(dense) > 2 * np.median(sparse)


def test_sparseness_is_share_above_half_the_evoked_maximum():
    rates = np.array([[10.0, 5.0], [20.0, 5.0], [30.0, 5.0], [14.0, 5.0]])
    # neuron 0: baseline 10, max evoked 20, above 10 evoked: 30 only (20 is exactly half: not above)
    np.testing.assert_allclose(sparseness(rates, np.array([10.0, 5.0])), [0.25, 0.0])


def test_default_rig_keeps_the_zoo_and_selective_rig_has_the_new_types():
    assert not set(SELECTIVE_TYPES) & set(load_rig("rigs/sim.toml").cortex.population.type_shares)
    shares = load_rig("rigs/sim-selective.toml").cortex.population.type_shares
    assert all(shares.get(t, 0) > 0 for t in SELECTIVE_TYPES)
