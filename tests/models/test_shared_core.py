"""Shared-core online model: interface, learning, held-out best weights, checkpoints, torchvision-format cores."""

import numpy as np
import pytest
import torch

from models.config import ModelConfig
from models.factory import make_online_model
from models.shared_core import CoreWeightsError, ResNetStemCore, SharedCoreOnline, SharedCorePredictor
from stimulus.synthesis import from_pixels
from tests.helpers import quadrant_data, small_compress_session

SHAPE = (16, 16, 3)


def _cfg(**kw) -> ModelConfig:
    base = dict(
        kind="shared",
        core="resnet18",
        core_channels=8,
        ensemble_size=2,
        batch_size=32,
        learning_rate=1e-2,
        min_responses_to_train=16,
        max_stored_responses=1000,
        validation_every=5,
        validate_every_steps=10,
    )
    return ModelConfig(**{**base, **kw})


def test_factory_builds_shared_and_predictor_interface():
    model = make_online_model(_cfg(), 3, SHAPE)
    assert isinstance(model, SharedCoreOnline)
    images, counts, _ = quadrant_data(40)
    model.add_responses(images, counts, 0.2)
    model.train(2)
    assert model.steps_done == 2 and np.isfinite(model.last_loss)
    pred = model.snapshot()
    assert isinstance(pred, SharedCorePredictor)
    assert (pred.version, pred.n_members, pred.n_neurons) == (1, 2, 3)
    x = torch.rand(5, 3, 16, 16, requires_grad=True)
    r = pred.rates(x)
    assert r.shape == (2, 5, 3) and (r >= 0).all()
    sub = pred.rates(x, [2, 0])
    torch.testing.assert_close(sub, r[:, :, [2, 0]])
    sub[:, :, 0].sum().backward()  # differentiable with respect to the images
    assert x.grad is not None and x.grad.abs().sum() > 0
    feats = pred.features(torch.rand(5, 3, 16, 16))
    assert feats.shape == (5, 8)
    assert model.snapshot().version == 1  # no training in between: same version


def test_members_differ_and_bootstrap_weights():
    model = make_online_model(_cfg(ensemble_size=3), 3, SHAPE)
    images, counts, _ = quadrant_data(300)
    model.add_responses(images, counts, 0.2)
    w = model.boot_weights[:300]
    assert (w[:, 0] == 1).all()  # member 0: every presentation once
    assert w[:, 1:].std() > 0.5 and abs(w[:, 1:].mean() - 1) < 0.15  # Poisson(1)
    model.train(30)
    r = model.snapshot().rates(torch.rand(20, 3, 16, 16)).detach()
    assert not torch.allclose(r[0], r[1])


def test_training_learns_every_neuron_at_once():
    torch.manual_seed(0)
    model = make_online_model(_cfg(), 3, SHAPE)
    images, counts, _ = quadrant_data(300)
    model.add_responses(images, counts, 0.2)
    test_images, _, test_rates = quadrant_data(200, seed=9)
    x = from_pixels(test_images)
    model.train(150)
    pred = model.snapshot().rates(x).mean(0).detach().numpy()
    r = [np.corrcoef(pred[:, n], test_rates[:, n])[0, 1] for n in range(3)]
    assert min(r) > 0.8, r


def test_held_out_presentations_are_never_trained_on():
    model = make_online_model(_cfg(validation_every=4), 3, SHAPE)
    images, counts, _ = quadrant_data(100)
    model.add_responses(images[:50], counts[:50], 0.2)
    model.add_responses(images[50:], counts[50:], 0.2)
    train_rows, val_rows = model._rows()
    np.testing.assert_array_equal(val_rows, np.arange(3, 100, 4))  # every 4th, across calls
    seen = set()
    orig = model.buffer.tensors

    def spy(index=None):
        if index is not None and len(index) == model.cfg.batch_size:
            seen.update(int(i) for i in index)
        return orig(index)

    model.buffer.tensors = spy
    model.train(40)
    assert seen and not seen & set(val_rows.tolist())


def test_published_weights_are_the_best_on_held_out_responses():
    """Many steps on few, noisy presentations overfit; the snapshot keeps the weights that did best held out."""
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    images, _, rates = quadrant_data(40, seed=3)
    counts = rng.poisson(rates * 0.05).astype(np.float32)  # a 50 ms window: few spikes
    test_images, _, test_rates = quadrant_data(300, seed=4)
    x = from_pixels(test_images)

    def held_out_r(net):
        with torch.no_grad():
            p = net(x).mean(0).numpy()
        return float(np.median([np.corrcoef(p[:, n], test_rates[:, n])[0, 1] for n in range(3)]))

    model = make_online_model(
        _cfg(core_channels=16, learning_rate=3e-2, validation_every=3, readout_l1=0.0, weight_decay=0.0), 3, SHAPE
    )
    model.add_responses(images, counts, 0.05)
    model.train(400)
    assert model.best_changes > 0 and model.best_r.isfinite().all()
    current, best = held_out_r(model.net), held_out_r(model.snapshot().net)
    assert best > current + 0.03, (best, current)  # measured: 0.86 against 0.77


def test_checkpoint_round_trip_weights_only(tmp_path):
    model = make_online_model(_cfg(), 3, SHAPE)
    images, counts, _ = quadrant_data(80)
    model.add_responses(images, counts, 0.2)
    model.train(25)
    path = tmp_path / "model.pt"
    torch.save({"kind": "shared", "model": model.weights_state()}, path)
    state = torch.load(path, weights_only=True)["model"]
    again = make_online_model(_cfg(), 3, SHAPE)
    again.load_weights_state(state)
    assert (again.version, again.steps_done) == (model.version, model.steps_done)
    x = torch.rand(4, 3, 16, 16)
    torch.testing.assert_close(again.snapshot().rates(x), model.snapshot().rates(x))
    with pytest.raises(ValueError, match="core"):
        make_online_model(_cfg(core="conv"), 3, SHAPE).load_weights_state(state)


def _torchvision_like_file(path, channels=8, extra=True, drop=None, reshape=None):
    """A state dict under torchvision resnet18's names (conv1, bn1, layer1.*), plus later layers a whole resnet18
    file would have: what a lab's weights file looks like, built here (nothing is downloaded)."""
    g = torch.Generator().manual_seed(5)
    state = {}
    for key, ref in ResNetStemCore(channels).state_dict().items():
        state[key] = torch.randn(ref.shape, generator=g) if ref.is_floating_point() else ref.clone()
        if key.endswith("running_var"):
            state[key] = state[key].abs() + 0.5
    if extra:
        state["layer2.0.conv1.weight"] = torch.zeros(2 * channels, channels, 3, 3)
        state["fc.weight"] = torch.zeros(10, 8 * channels)
    if drop:
        del state[drop]
    if reshape:
        state[reshape] = torch.zeros(3)
    torch.save(state, path)
    return state


def test_core_loads_torchvision_format_weights_and_can_be_frozen(tmp_path):
    path = tmp_path / "resnet18.pth"
    state = _torchvision_like_file(path)
    model = make_online_model(_cfg(core_weights=str(path), core_frozen=True), 3, SHAPE)
    assert len(model.net.cores) == 1  # frozen: one core for all members
    for key, value in model.net.cores[0].state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)
    images, counts, _ = quadrant_data(80)
    model.add_responses(images, counts, 0.2)
    model.train(20)
    for key, value in model.net.cores[0].state_dict().items():  # frozen: training leaves the core alone
        torch.testing.assert_close(value, state[key], msg=key)
    assert model.snapshot().rates(torch.rand(2, 3, 16, 16)).shape == (2, 2, 3)
    # Not frozen: every member starts from the file and then learns.
    model = make_online_model(_cfg(core_weights=str(path)), 3, SHAPE)
    assert len(model.net.cores) == 2
    torch.testing.assert_close(model.net.cores[1].conv1.weight, state["conv1.weight"])
    model.add_responses(images, counts, 0.2)
    model.train(5)
    assert not torch.allclose(model.net.cores[1].conv1.weight, state["conv1.weight"])


def test_loaded_running_statistics_are_used_but_never_updated(tmp_path):
    """The stem's bn1 applies the file's running statistics as a fixed affine (no batch statistics)."""
    path = tmp_path / "w.pt"
    state = _torchvision_like_file(path, extra=False)
    model = make_online_model(_cfg(core_weights=str(path)), 3, SHAPE)
    bn = model.net.cores[0].bn1
    x = torch.randn(4, 8, 5, 5)
    expected = (x - state["bn1.running_mean"][:, None, None]) / torch.sqrt(
        state["bn1.running_var"][:, None, None] + 1e-5
    ) * state["bn1.weight"][:, None, None] + state["bn1.bias"][:, None, None]
    torch.testing.assert_close(bn(x), expected)
    images, counts, _ = quadrant_data(80)
    model.add_responses(images, counts, 0.2)
    model.train(5)
    torch.testing.assert_close(model.net.cores[0].bn1.running_mean, state["bn1.running_mean"])


@pytest.mark.parametrize(
    "drop,reshape,match",
    [
        ("layer1.1.bn2.running_var", None, "no key 'layer1.1.bn2.running_var'"),
        (None, "conv1.weight", "key 'conv1.weight' has shape"),
    ],
)
def test_bad_core_weights_file_names_file_and_key(tmp_path, drop, reshape, match):
    path = tmp_path / "bad.pth"
    _torchvision_like_file(path, drop=drop, reshape=reshape)
    with pytest.raises(CoreWeightsError, match=match) as err:
        make_online_model(_cfg(core_weights=str(path)), 3, SHAPE)
    assert "bad.pth" in str(err.value)


def test_core_weights_of_another_width_or_missing_file(tmp_path):
    path = tmp_path / "wide.pth"
    _torchvision_like_file(path, channels=16)
    with pytest.raises(CoreWeightsError, match="'conv1.weight' has shape .*core_channels"):
        make_online_model(_cfg(core_weights=str(path)), 3, SHAPE)
    with pytest.raises(CoreWeightsError, match="no file .*missing.pth"):
        make_online_model(_cfg(core_weights=str(tmp_path / "missing.pth")), 3, SHAPE)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CoreWeightsError, match="junk.pth.*not a torch state dict"):
        make_online_model(_cfg(core_weights=str(tmp_path / "junk.pth")), 3, SHAPE)
    with pytest.raises(ValueError, match="core_frozen"):
        make_online_model(_cfg(core_frozen=True), 3, SHAPE)


def test_grey_images_and_conv_core():
    images, counts, _ = quadrant_data(60)
    grey = images[..., :1]
    for core in ("resnet18", "conv"):
        model = make_online_model(_cfg(core=core), 3, (16, 16, 1))
        model.add_responses(grey, counts, 0.2)
        model.train(3)
        assert model.snapshot().rates(torch.rand(2, 1, 16, 16)).shape == (2, 2, 3)


def test_compress_reads_a_shared_session_checkpoint_as_its_teacher(tmp_path):
    """`cortexloop compress` starts its teacher from the session's checkpoint, of whichever kind it is."""
    from models.compress import _teacher

    model = make_online_model(_cfg(), 3, SHAPE)
    images, counts, _ = quadrant_data(80)
    model.add_responses(images, counts, 0.2)
    model.train(12)
    path = tmp_path / "model.pt"
    torch.save({"kind": "shared", "n_neurons": 3, "model": model.weights_state()}, path)  # as ModelWorker saves
    compress_cfg = _cfg().model_copy(update={"kind": "compact"})  # compress asks for the compact kind
    teacher, source = _teacher(compress_cfg, 3, SHAPE, path, log=print)
    assert isinstance(teacher, SharedCoreOnline) and "shared" in source and "12 steps" in source
    assert teacher.form == "shared resnet18 core"  # compress's report names it
    x = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(teacher.snapshot().rates(x), model.snapshot().rates(x))


def test_compress_end_to_end_from_a_shared_session_checkpoint(tmp_path):
    """The whole of compress (teacher, distil, prune, retrain, pages, report) on a shared-kind checkpoint."""
    from models.compress import compress_from_arrays

    rig, imgs, counts = small_compress_session(
        3,
        120,
        kind="shared",
        core_channels=8,
        filters_per_layer=4,
        n_layers=3,
        strides=[2, 2, 1],
        kernel_size=3,
        ensemble_size=2,
        form="loop",
        compression=dict(distill_steps=20, retrain_steps=10, prune_images=100),
    )
    session_model = make_online_model(rig.model, 3, imgs.shape[1:])
    session_model.add_responses(imgs, counts, 0.15)
    session_model.train(15)
    ckpt = tmp_path / "model.pt"
    torch.save({"kind": "shared", "n_neurons": 3, "model": session_model.weights_state()}, ckpt)
    report = compress_from_arrays(
        imgs,
        counts,
        0.15,
        rig,
        tmp_path / "out",
        ensemble_steps=5,
        mei_steps=2,
        log=lambda line: None,
        teacher_checkpoint=ckpt,
    )
    assert "shared" in report["teacher_from"] and report["ensemble_form"] == "shared resnet18 core"
    assert len(report["neurons"]) == 3 and (tmp_path / "out" / "models.pt2").exists()
