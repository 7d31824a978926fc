"""MEIs that hold: observed over predicted rates from stored plans and responses, and cautious MEIs for neurons
whose MEIs fell short."""

import math
import re

import numpy as np
import torch

from controller.config import load_rig, with_overrides
from controller.session import run_in_process
from records.store import SessionStore
from stimulus.mei_hold import caution, cautious_settings, median_ratio, observed_over_predicted
from stimulus.pools import Pools
from stimulus.selection import ImageChooser
from stimulus.selection_config import SelectionConfig


class Brightness:
    """Two members; neuron j's rate rises with the image's mean level, a little differently per member."""

    n_members, n_neurons, version = 2, 2, 1

    def rates(self, images, neurons=None):
        level = images.mean(dim=(1, 2, 3))
        out = torch.stack([torch.stack([5 + 30 * level, 8 + 20 * level], 1) * (1 + 0.1 * m) for m in range(2)])
        return out if neurons is None else out[:, :, list(neurons)]


def test_ratio_is_mean_observed_over_mean_predicted_per_neuron():
    reasons = [
        "mei neuron#1 predicted 40.0Hz from pool#3",
        "random pool#5",
        "mei neuron#1 predicted 20.0Hz from pool#9 [model-driven: ...]",
        "mei neuron#0 predicted 10.0Hz from noise",
        "mei neuron#0 predicted 10.0Hz from noise",
    ]
    counts = np.array([[0, 3], [9, 9], [0, 6], [1, 0], [2, 0]], np.float32)
    per = observed_over_predicted(reasons, counts, 0.1, valid=[True, True, True, True, False])
    assert set(per) == {0, 1}
    assert per[1]["presentations"] == 2 and math.isclose(per[1]["ratio"], (30 + 60) / (40 + 20))
    assert per[0]["presentations"] == 1 and math.isclose(per[0]["ratio"], 10 / 10)  # the invalid one is left out
    assert math.isclose(median_ratio(per), (1.5 + 1.0) / 2)
    # Caution: none at or above the level or on too few presentations; more the further below.
    assert caution(per[1], 0.7) == 0 and caution(per[0], 2.0) == 0  # neuron 0 has 1 presentation
    low = {"presentations": 3, "ratio": 0.3}
    assert [caution({**low, "ratio": r}, 0.8) for r in (0.8, 0.6, 0.4, 0.3, 0.1, 0.0)] == [0, 1, 2, 2, 3, 3]
    assert cautious_settings(16, 1.0, 0) == (16, 1.0) and cautious_settings(16, 1.0, 2) == (4, 3.0)


def mei_chooser(seed: int = 0, **cfg) -> tuple[ImageChooser, np.ndarray]:
    """A chooser of MEIs only over 20 random 8x8 natural images (returned too), responses counted over 0.1 s."""
    imgs = np.random.default_rng(seed).integers(40, 200, (20, 8, 8, 3)).astype(np.uint8)
    pools = Pools(imgs, ("natural",) * len(imgs), imgs[:4])
    return ImageChooser(SelectionConfig(mix={"mei": 1.0}, candidates=8, **cfg), pools, seed=1, window_s=0.1), imgs


CAUTIOUS = {"mei_steps": 8, "mei_spread_penalty": 1.0, "mei_hold_below": 0.7}


def test_a_neuron_whose_meis_fall_short_gets_more_cautious_ones():
    chooser, _ = mei_chooser(**CAUTIOUS)
    predictor = Brightness()
    first = chooser.choose(0, 2, predictor)  # one MEI for neuron 0, one for neuron 1
    assert [re.match(r"mei neuron#(\d+)", c.reason).group(1) for c in first] == ["0", "1"]
    predicted = [float(re.search(r"predicted ([\d.]+)Hz", c.reason).group(1)) for c in first]
    # Neuron 0's MEI evokes a tenth of its prediction, twice; neuron 1's what was predicted.
    px = np.stack([first[0].pixels, first[1].pixels] * 2)
    counts = np.zeros((4, 2))
    counts[[0, 2], 0] = 0.1 * predicted[0] * 0.1
    counts[[1, 3], 1] = predicted[1] * 0.1
    chooser.observe(px, counts)
    hold = chooser.mei_hold()
    assert math.isclose(hold["per_neuron"][0]["ratio"], 0.1, rel_tol=1e-6)
    assert math.isclose(hold["per_neuron"][1]["ratio"], 1.0, rel_tol=1e-6)
    assert hold["per_neuron"][0]["caution"] == 3 and hold["per_neuron"][1]["caution"] == 0
    second = chooser.choose(1, 2, predictor)
    assert "cautious 3: observed/predicted 0.10 < 0.7; 1 steps, spread penalty 4)" in second[0].reason
    assert "cautious" not in second[1].reason
    # Unset (the default), the same shortfall changes nothing.
    plain, _ = mei_chooser(**{**CAUTIOUS, "mei_hold_below": None})
    plain.choose(0, 2, predictor)
    plain.observe(px, counts)
    assert all("cautious" not in c.reason for c in plain.choose(1, 2, predictor))


def test_session_ratio_from_the_store_matches_the_live_figure(tmp_path):
    rig = with_overrides(
        load_rig("rigs/sim.toml"),
        session={"n_trials": 8, "speed": "max"},
        display={"presenter": "headless"},
        images={"pool_size": 200, "test_size": 20},
        cortex={"population": {"n_neurons": 4, "seed": 3}},
        model={"ensemble_size": 2, "steps_per_trial": 5},
        selection={
            "mix": {"random": 0.4, "mei": 0.6},
            "candidates": 16,
            "mei_steps": 2,
            "mei_hold_below": 0.7,
            "model_driven_after": None,
        },  # MEIs from the first model on: no cold start in 8 trials
    )
    summary, _ = run_in_process(rig, tmp_path / "s")
    store = SessionStore.open(tmp_path / "s")
    try:
        resp = store.responses(valid_only=True)
    finally:
        store.conn.close()
    stored = observed_over_predicted(resp["reason"], resp["counts"], resp["window_s"])
    live = summary["model"]["mei_hold"]["per_neuron"]
    assert stored and {int(j) for j in live} == set(stored)
    for j, v in stored.items():
        got = live[j] if j in live else live[str(j)]
        assert got["presentations"] == v["presentations"]
        assert math.isclose(got["ratio"], v["ratio"], rel_tol=1e-4)
    assert math.isclose(summary["mei_observed_over_predicted_median"], median_ratio(stored), rel_tol=1e-4)


def test_a_neurons_first_mei_is_as_cautious_as_the_populations_meis_have_earned():
    chooser, _ = mei_chooser(**CAUTIOUS)
    predictor = Brightness()
    first = chooser.choose(0, 1, predictor)  # neuron 0's MEI only
    predicted = float(re.search(r"predicted ([\d.]+)Hz", first[0].reason).group(1))
    counts = np.zeros((2, 2))
    counts[:, 0] = 0.1 * predicted * 0.1  # a tenth of its prediction, twice
    chooser.observe(np.stack([first[0].pixels] * 2), counts)
    second = chooser.choose(1, 1, predictor)  # neuron 1: no MEI of its own shown yet
    assert second[0].reason.startswith("mei neuron#1")
    assert "cautious 3: all neurons' MEIs observed/predicted 0.10 < 0.7; 1 steps" in second[0].reason


def test_recorded_start_is_the_shown_image_the_neuron_answered_most():
    chooser, imgs = mei_chooser(seed=1, mei_start="recorded", mei_steps=0, contrast_bound="none")
    shown = imgs[10:14]
    counts = np.array([[1, 2], [6, 2], [0, 2], [2, 2]], np.float64)  # neuron 0 answers image 11 most; neuron 1 flat
    chooser.observe(shown, counts)
    meis = chooser.choose(0, 2, Brightness())
    assert meis[0].reason.startswith("mei neuron#0") and "from the shown image it answered at 60.0Hz" in meis[0].reason
    np.testing.assert_array_equal(meis[0].pixels, imgs[11])  # no steps: the start itself
    # Neuron 1 answered nothing above its mean: the model's best pool image, as with mei_start "pool".
    assert re.search(r"mei neuron#1 predicted [\d.]+Hz from pool#\d+$", meis[1].reason)
