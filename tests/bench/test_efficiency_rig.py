"""bench efficiency --rig R runs R's population and, in the closed-loop-rig arm, R's own selection."""

import json
from argparse import Namespace

from acquisition.config import SELECTIVE_TYPES
from bench.efficiency import arm_rig, main
from controller.config import load_rig

RIG = "rigs/sim-selective.toml"


def _args(**kw):
    base = dict(
        rig=RIG, trials=4, steps_per_trial=5, model=None, device=None, ensemble_size=None, neurons=8,
        objective=None, mix="selected=1", candidates=16, pool_size=200, test_size=20, size_px=None, gaudy_share=None,
    )  # fmt: skip
    return Namespace(**{**base, **kw})


def test_rig_arm_keeps_the_rig_files_population_and_selection():
    own = load_rig(RIG)
    rig = arm_rig(_args(), "closed-loop-rig", seed=3)
    pop = rig.cortex.population
    assert (pop.n_neurons, pop.seed) == (8, 3)  # the two keys the benchmark sets
    assert pop.type_shares == own.cortex.population.type_shares
    assert pop.sparseness == own.cortex.population.sparseness
    assert rig.selection.mix == own.selection.mix
    assert rig.selection.model_driven_after == own.selection.model_driven_after
    assert rig.selection.candidates == own.selection.candidates
    # The --mix arms set their own mix, over the same population.
    other = arm_rig(_args(), "closed-loop-natural", seed=3)
    assert other.selection.mix == {"selected": 1.0} and other.cortex.population.type_shares == pop.type_shares


def test_efficiency_on_the_selective_rig_reports_per_neuron_type(tmp_path):
    out = tmp_path / "eff.json"
    argv = ["--rig", RIG, "--arms", "random-natural", "closed-loop-rig", "--trials", "4", "--eval-every", "2"]
    argv += ["--seeds", "0", "--neurons", "8", "--pool-size", "200", "--test-size", "20", "--steps-per-trial", "5"]
    assert main([*argv, "--store", str(tmp_path / "s"), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    run = res["runs"]["closed-loop-rig"][0]
    assert set(SELECTIVE_TYPES) <= set(run["neuron_types"]) and len(run["neuron_types"]) == 8
    # The rig's mix (repeats among its kinds) under its cold start: model kinds' slots are random images so far;
    # evolved images need recorded responses, not a model.
    assert set(run["images_by_kind"]) == {"random", "repeat", "evolved"}
    by_type = res["summary"]["arms"]["closed-loop-rig"]["by_type"]
    assert set(SELECTIVE_TYPES) <= set(by_type["types"])
    assert all(by_type["types"][t]["sparseness_median"] < 0.1 for t in SELECTIVE_TYPES)
    assert "selective_over_zoo_median_r" in by_type
    # Random natural images never beat the best natural pool image (they are pool images).
    assert res["summary"]["arms"]["random-natural"]["by_type"]["best_shown_beats_best_natural_mean"] == 0.0
    assert "behind_at_trials" in res["summary"]["comparisons"]["closed-loop-rig"]["vs random-natural"]
