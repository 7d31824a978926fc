"""On the wall clock the model trains in a thread; whether it keeps training while a plan is chosen."""

from pathlib import Path

import numpy as np
import pytest

from contract import messages as m
from controller.clocks import make_clock
from controller.config import load_rig, with_overrides
from models.worker import ModelWorker, trains_while_choosing
from stimulus.pools import make_pools

ROOT = Path(__file__).resolve().parents[2]


def test_auto_trains_while_choosing_only_with_three_cores(monkeypatch):
    import models.worker as modelling

    monkeypatch.setattr(modelling, "usable_cores", lambda: 2)
    assert not trains_while_choosing("auto")
    monkeypatch.setattr(modelling, "usable_cores", lambda: 3)
    assert trains_while_choosing("auto")
    assert trains_while_choosing("always") and not trains_while_choosing("never")


@pytest.mark.parametrize("setting", ["always", "never"])
def test_training_during_choice_follows_the_setting(setting):
    rig = load_rig(ROOT / "rigs" / "sim.toml")
    rig = with_overrides(
        rig,
        session={"speed": "realtime"},
        images={"pool_size": 200, "test_size": 20},
        model={"train_while_choosing": setting, "core_channels": 8, "ensemble_size": 2},
        cortex={"population": {"n_neurons": 4, "seed": 3}},
        selection={"model_driven_after": None},  # the model chooses from its first version: there is a choice
    )
    pools = make_pools(rig.images)
    worker = ModelWorker(rig, make_clock("realtime"), pools=pools)
    rng = np.random.default_rng(0)
    try:
        worker.learn(pools.train[:40], rng.poisson(3.0, (40, 4)).astype(np.float32))
        for trial in range(4):
            worker.plan(m.ModelRequest(request_id=trial, op="plan", trial_id=trial, n_images=5))
        info = worker.info()
    finally:
        worker.close()
    assert info["train_while_choosing"] == (setting == "always")
    assert info["training_steps"] > 0 and len(worker.choose_s) == 4
    if setting == "always":
        assert info["steps_while_choosing"] > 4  # more than "never" can take (one step under way per choice)
    else:  # at most the step already under way when the choice began, per choice
        assert info["steps_while_choosing"] <= 4
