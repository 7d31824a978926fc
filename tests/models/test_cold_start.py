"""The cold start: model-driven image kinds wait until the ensemble's measured held-out quality beats chance."""

import re

import numpy as np

from controller.config import load_rig, with_overrides
from controller.session import run_in_process
from models.metrics import held_out_quality
from records.store import SessionStore

FIGURES = re.compile(r"(cold start|model-driven): held-out r ([-\d.]+), chance ([-\d.]+), threshold ([-\d.]+), n (\d+)")
MODEL_KINDS = ("selected", "synthesized", "mei")


def _rig(threshold: float):
    return with_overrides(
        load_rig("rigs/sim.toml"),
        session={"n_trials": 20, "speed": "max"},
        display={"presenter": "headless"},
        images={"pool_size": 300, "test_size": 20},
        cortex={"population": {"n_neurons": 8, "seed": 3}},
        model={"ensemble_size": 2, "validation_every": 2, "steps_per_trial": 20},
        selection={
            "mix": {"random": 0.2, "selected": 0.6, "mei": 0.2},
            "model_driven_after": threshold,
            "candidates": 32,
            "mei_steps": 3,
        },
    )


def _regimes(session_dir):
    """Per plan with a model-kind slot: (regime, r, chance, threshold, n) or (regime, None...) before n figures."""
    store = SessionStore.open(session_dir)
    try:
        plans = store.plans()
    finally:
        store.conn.close()
    out = []
    for plan in plans:
        tagged = [r for r in plan["reasons"] if "cold start" in r or "model-driven" in r]
        if not tagged:
            continue
        assert len({("cold start" in r) for r in tagged}) == 1  # one regime per plan
        m = FIGURES.search(tagged[0])
        regime = "cold start" if "cold start" in tagged[0] else "model-driven"
        figures = tuple(float(g) for g in m.groups()[1:]) if m else (None,) * 4
        out.append((plan["trial_id"], regime, *figures, tagged))
    return out


def test_switch_to_model_driven_choices_when_quality_passes_not_before(tmp_path):
    summary, _ = run_in_process(_rig(0.05), tmp_path / "s")
    assert summary["status"] == "completed"
    rows = _regimes(tmp_path / "s")
    regimes = [r[1] for r in rows]
    assert regimes[0] == "cold start" and "model-driven" in regimes  # it started cold and switched
    for trial, regime, r, chance, threshold, n, reasons in rows:
        if regime == "cold start":
            # Model kinds' slots are random natural images while the rule fails, and say why.
            assert all(re.sub(r"^requeued from trial \d+: ", "", x).startswith("random pool#") for x in reasons)
            assert r is None or n < 8 or r <= max(threshold, chance)
        else:
            assert r > max(threshold, chance) and n >= 8
            assert all(re.sub(r"^requeued from trial \d+: ", "", x).split()[0] in MODEL_KINDS for x in reasons)
    first = regimes.index("model-driven")
    assert all(x == "cold start" for x in regimes[:first])


def test_unreachable_threshold_keeps_random_images(tmp_path):
    summary, _ = run_in_process(_rig(0.95), tmp_path / "s")
    rows = _regimes(tmp_path / "s")
    assert rows and all(r[1] == "cold start" for r in rows)
    assert summary["model"]["model_driven_since_plan"] is None


def test_held_out_quality_against_chance():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(40, 5))
    good = held_out_quality(truth + 0.5 * rng.normal(size=truth.shape), truth)
    none = held_out_quality(rng.normal(size=truth.shape), truth)
    assert good["r"] > 0.8 > good["chance_r"] and good["n"] == 40
    assert none["r"] < none["chance_r"] + 0.1 and 0.0 < none["chance_r"] < 0.3
