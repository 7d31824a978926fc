"""model.init_from: day two starts from day one's checkpoint (the core, and the readouts of units kept)."""

import numpy as np
import pytest
import torch

from controller.clocks import make_clock
from controller.config import load_rig, with_overrides
from models.worker import ModelWorker

DAY_ONE = [["Tetrode 1", 1], ["Tetrode 1", 2], ["Tetrode 2", 1]]
# Day two: Tetrode 1/2 is gone, a new unit appeared, the other two are kept (in another order).
DAY_TWO = [["Tetrode 2", 1], ["Tetrode 9", 1], ["Tetrode 1", 1]]


def _rig(units, init_from="", channels=8):
    return with_overrides(
        load_rig("rigs/openephys.toml"),
        model={
            "kind": "shared",
            "device": "cpu",
            "core": "conv",
            "core_channels": channels,
            "ensemble_size": 2,
            "min_responses_to_train": 4,
            "init_from": init_from,
        },
        images={"pool_size": 60, "test_size": 10},
        cortex={"openephys": {"units": units}},
    )


def _counts(worker, n_neurons, seed=0):
    rng = np.random.default_rng(seed)
    pixels = worker.pools.train[:40]
    drive = pixels.reshape(len(pixels), -1).astype(np.float64).mean(1, keepdims=True) / 255.0
    return pixels, rng.poisson(2.0 + 10.0 * drive * (1 + np.arange(n_neurons))[None]).astype(np.float32)


def _day_one(tmp_path):
    worker = ModelWorker(_rig(DAY_ONE), make_clock("max"), checkpoint_dir=tmp_path / "day1" / "checkpoints")
    worker.learn(*_counts(worker, 3))
    for _ in range(ModelWorker.CHECKPOINT_EVERY_VERSIONS + 1):
        worker.model.train(20)  # validation publishes the newest weights every 20 steps
        worker.save_checkpoint(worker.snapshot().version)
    assert (tmp_path / "day1" / "checkpoints" / "model.pt").is_file()
    return worker


def _started(rig):
    worker = ModelWorker(rig, make_clock("max"))
    worker.learn(*_counts(worker, 3, seed=1))  # the model is built with the first responses
    return worker


def test_init_from_loads_the_core_and_the_kept_units_readouts(tmp_path):
    _day_one(tmp_path)
    old = torch.load(tmp_path / "day1" / "checkpoints" / "model.pt", weights_only=True)["model"]["best"]
    day2 = _started(_rig(DAY_TWO, init_from=str(tmp_path / "day1")))
    fresh = _started(_rig(DAY_TWO))
    new, new_fresh = day2.model.net.state_dict(), fresh.model.net.state_dict()
    cores = [k for k in old if k.startswith("cores.")]
    assert cores and all(torch.equal(new[k], old[k]) for k in cores)
    assert not all(torch.equal(new_fresh[k], old[k]) for k in cores)  # day one's training changed the core
    for m in range(2):
        for name in ("mask", "features", "bias"):
            key = f"readouts.{m}.{name}"
            assert torch.equal(new[key][0], old[key][2])  # Tetrode 2/1
            assert torch.equal(new[key][2], old[key][0])  # Tetrode 1/1
            assert torch.equal(new[key][1], new_fresh[key][1])  # Tetrode 9/1: new, fresh
    # The published (best) weights start from the same place.
    assert all(torch.equal(day2.model.best.state_dict()[k], old[k]) for k in cores)
    info = day2.info()["initialized_from"]
    assert info["readouts_kept"] == ["Tetrode 2/1", "Tetrode 1/1"]
    assert info["readouts_new"] == 1 and info["units_gone"] == 1


def test_init_from_without_unit_names_loads_only_the_core(tmp_path):
    _day_one(tmp_path)
    rig = with_overrides(load_rig("rigs/sim.toml"), model={"core": "conv", "core_channels": 8, "ensemble_size": 2})
    rig = with_overrides(rig, model={"init_from": str(tmp_path / "day1")}, images={"pool_size": 60, "test_size": 10})
    day2 = _started(rig)
    assert day2.info()["initialized_from"]["readouts_kept"] == []
    assert day2.info()["initialized_from"]["readouts_new"] == 3


def test_init_from_refuses_a_missing_checkpoint_or_other_shapes(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nothing" / "checkpoints" / "model.pt")):
        ModelWorker(_rig(DAY_TWO, init_from=str(tmp_path / "nothing")), make_clock("max"))
    _day_one(tmp_path)
    with pytest.raises(ValueError, match=r"model\.init_from: .*day1.*model\.pt.*shape"):
        _started(_rig(DAY_TWO, init_from=str(tmp_path / "day1"), channels=12))
