"""Online compact ensemble: interface, training reduces the loss, frozen snapshots, devices, bootstrap."""

import numpy as np
import pytest
import torch

from models import stacked
from models.config import ModelConfig
from models.factory import make_online_model
from models.online import CompactOnline, CompactPredictor, resolve_device
from models.stacked import LoopForm, StackedCompact
from tests.helpers import quadrant_data

SHAPE = (16, 16, 3)


def _cfg(**kw) -> ModelConfig:
    base = dict(
        kind="compact",
        filters_per_layer=4,
        n_layers=3,
        strides=[2, 2, 1],
        kernel_size=3,
        ensemble_size=2,
        batch_size=32,
        learning_rate=1e-2,
        min_responses_to_train=16,
        form="loop",
        max_stored_responses=1000,
    )
    return ModelConfig(**{**base, **kw})


def test_factory_builds_compact_and_predictor_shapes():
    model = make_online_model(_cfg(), 3, SHAPE)
    assert isinstance(model, CompactOnline)
    images, counts, _ = quadrant_data(40)
    model.add_responses(images, counts, 0.2)
    model.train(2)
    pred = model.snapshot()
    assert isinstance(pred, CompactPredictor)
    assert (pred.version, pred.n_members, pred.n_neurons) == (1, 2, 3)
    x = torch.rand(5, 3, 16, 16, requires_grad=True)
    r = pred.rates(x)
    assert r.shape == (2, 5, 3) and (r >= 0).all()
    sub = pred.rates(x, [2, 0])
    torch.testing.assert_close(sub, r[:, :, [2, 0]])
    sub[:, :, 0].sum().backward()  # differentiable with respect to the images
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_no_training_before_enough_data_and_version_counts_training():
    model = make_online_model(_cfg(min_responses_to_train=50), 3, SHAPE)
    images, counts, _ = quadrant_data(20)
    model.add_responses(images, counts, 0.2)
    model.train(5)
    assert model.steps_done == 0 and model.snapshot().version == 0
    images, counts, _ = quadrant_data(60, seed=1)
    model.add_responses(images, counts, 0.2)
    model.train(1)
    assert model.snapshot().version == 1
    assert model.snapshot().version == 1  # no training in between: same version


@pytest.mark.parametrize("form", ["loop", "stacked"])
def test_online_training_reduces_loss_and_learns(form):
    torch.manual_seed(0)
    model = make_online_model(_cfg(form=form), 3, SHAPE)
    images, counts, _ = quadrant_data(300)
    model.add_responses(images, counts, 0.2)
    test_images, _, test_rates = quadrant_data(200, seed=9)
    x = torch.from_numpy(test_images).permute(0, 3, 1, 2).float() / 255

    def held_out_nll():
        pred = model.snapshot().rates(x).mean(0).detach().numpy() * 0.2
        target = test_rates * 0.2
        return float((pred - target * np.log(pred + 1e-9)).mean())

    model.train(1)
    first = held_out_nll()
    model.train(60)
    later = held_out_nll()
    assert later < first - 0.05
    pred = model.snapshot().rates(x).mean(0).detach().numpy()
    corr = [np.corrcoef(pred[:, i], test_rates[:, i])[0, 1] for i in range(3)]
    assert min(corr) > 0.8, corr


def test_snapshot_is_frozen_while_training_continues():
    model = make_online_model(_cfg(), 3, SHAPE)
    images, counts, _ = quadrant_data(100)
    model.add_responses(images, counts, 0.2)
    model.train(3)
    snap = model.snapshot()
    x = torch.rand(6, 3, 16, 16)
    before = snap.rates(x).detach().clone()
    model.train(10)
    torch.testing.assert_close(snap.rates(x), before)
    assert model.snapshot().version == snap.version + 1
    assert not torch.equal(model.snapshot().rates(x), before)


def test_members_differ_and_bootstrap_weights_are_poisson():
    model = make_online_model(_cfg(ensemble_size=3), 3, SHAPE)
    images, counts, _ = quadrant_data(200)
    model.add_responses(images, counts, 0.2)
    w = model.boot_weights[:200]
    assert (w[:, 0] == 1).all()  # member 0 sees every presentation once
    assert 0.8 < w[:, 1:].mean() < 1.2 and (w[:, 1:] == 0).mean() > 0.25
    model.train(20)
    r = model.snapshot().rates(torch.rand(8, 3, 16, 16))
    assert (r[0] - r[1]).abs().max() > 1e-3


def test_memory_is_bounded_by_the_ring_buffer():
    model = make_online_model(_cfg(max_stored_responses=100), 3, SHAPE)
    for seed in range(3):
        images, counts, _ = quadrant_data(70, seed=seed)
        model.add_responses(images, counts, 0.2)
    assert len(model.buffer) == 100 and model.boot_weights.shape[0] == 100


def test_device_handling():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            make_online_model(_cfg(device="cuda"), 3, SHAPE)


def test_form_is_the_one_asked_for_or_the_faster_one_timed_at_startup(monkeypatch):
    for form, net_class in (("loop", LoopForm), ("stacked", StackedCompact)):
        model = make_online_model(_cfg(form=form), 3, SHAPE)
        assert model.form == form and isinstance(model.net, net_class)
    # "auto" times both forms here (the real timing, recorded on its way back) and keeps the faster.
    real_time_forms, timings = stacked.time_forms, []

    def recorded_time_forms(*args, **kwargs):
        timings.append(real_time_forms(*args, **kwargs))
        return timings[-1]

    monkeypatch.setattr(stacked, "time_forms", recorded_time_forms)
    model = make_online_model(_cfg(device="auto", form="auto"), 3, SHAPE)
    assert len(timings) == 1 and set(timings[0]) == {"loop", "stacked"}
    assert all(0 < t < 10 for t in timings[0].values()), timings
    assert model.form == min(timings[0], key=timings[0].get), timings
    assert isinstance(model.net, StackedCompact if model.form == "stacked" else LoopForm)
