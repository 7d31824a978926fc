"""bench day-two: day one writes its model's checkpoint, day two starts from it (or not) on other units of the
same animal, and the JSON carries the figures against the goal."""

import json
import math

import numpy as np

from bench.day_two import ARMS, RecordedUnits, day_units, main

ARGV = ["--trials", "4", "--eval-every", "2", "--seeds", "0", "--neurons", "4", "--animal-neurons", "8"]
ARGV += ["--pool-size", "120", "--test-size", "12", "--steps-per-trial", "3"]


def test_day_two_runs_end_to_end_and_writes_its_figures(tmp_path):
    out = tmp_path / "d2.json"
    assert main([*ARGV, "--store", str(tmp_path / "s"), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["benchmark"] == "day-two" and res["engine_mode"] == "in-process"
    assert set(res["runs"]) == set(ARMS) and (tmp_path / "d2.png").stat().st_size > 0
    # Day one kept its last model where model.init_from looks; only the init-from arm started from it.
    assert (tmp_path / "s" / "day-one-seed0" / "checkpoints" / "model.pt").is_file()
    init, fresh = res["runs"]["day-two-init-from"][0], res["runs"]["day-two-fresh"][0]
    assert init["initialized_from"]["path"].endswith("day-one-seed0/checkpoints/model.pt")
    assert init["initialized_from"]["readouts_new"] == 4  # numbered units: only the core is carried over
    assert fresh["initialized_from"] is None and res["runs"]["day-one"][0]["initialized_from"] is None
    # Both day-two arms record the same units, another draw than day one's, from the same animal.
    assert init["units"] == fresh["units"] != res["runs"]["day-one"][0]["units"]
    for arm in ARMS:
        assert res["runs"][arm][0]["trials"] == [2, 4] and res["runs"][arm][0]["status"] == "completed"
    summ = res["summary"]
    assert summ["target_per_seed"] == [res["runs"]["day-one"][0]["accuracy"][-1]]
    for arm in ARMS:
        assert {"trials_to_day_one_final", "trials_to_day_one_final_median", "final_ci95"} <= set(summ["arms"][arm])
    assert summ["arms"]["day-one"]["trials_to_day_one_final"] == [4] or summ["arms"]["day-one"]["reached"] == 1
    goal = res["goal"]
    assert {"trials_median", "trials_median_ci95", "fresh_trials_median", "ratio_median", "met"} <= set(goal)
    assert math.isclose(goal["goal_trials"], 0.3 * 4)
    assert isinstance(goal["met"], bool)


def test_recorded_units_are_the_animals_rates_at_those_units():
    class Animal:
        n_neurons = 5
        baseline_hz = np.arange(5.0)
        types = list("abcde")

        def rates(self, images):
            return np.tile(np.arange(5.0) * 10, (len(images), 1))

    units = RecordedUnits(Animal(), [1, 3])
    assert units.n_neurons == 2 and units.types == ["b", "d"] and list(units.baseline_hz) == [1.0, 3.0]
    assert units.rates(np.zeros((3, 2, 2, 3))).tolist() == [[10.0, 30.0]] * 3
    one, two = day_units(60, 20, seed=4, day=1), day_units(60, 20, seed=4, day=2)
    assert one == day_units(60, 20, seed=4, day=1) and one != two  # seeded per day
    assert len(set(one)) == 20 and all(0 <= i < 60 for i in one + two)
