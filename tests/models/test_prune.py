"""Pruning rule (Cowley et al. 2026) and distillation."""

import json

import numpy as np
import pytest
import torch

from models.compact import CompactNet, CompactSpec, count_parameters
from models.distill import augmented_images, distill, fit_students, teacher_rates
from models.prune import (
    choose_last_layer,
    explained_variance_curve,
    layer_activations,
    network_statistics,
    prune_model,
    slice_model,
)
from models.stacked import StackedCompact
from tests.helpers import small_compress_session

# As the model worker does (ModelConfig.cpu_threads): one thread is fastest for these small models.
torch.set_num_threads(1)


def _orthogonal_columns(n: int, k: int, seed: int) -> torch.Tensor:
    """(n, k) centred columns, mutually orthogonal, each with variance exactly 1 (population)."""
    z = torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    q, _ = torch.linalg.qr(z - z.mean(0))
    return q * n**0.5


def test_last_layer_rule_keeps_the_fewest_filters_holding_the_r2_fraction():
    # Orthogonal contributions: keeping set S (the rest replaced by their means) gives a linear
    # readout r^2 = sum of kept variances / total, exactly. Variances 64, 16, 36, 9, 25 -> 150.
    stds = torch.tensor([8.0, 4.0, 6.0, 3.0, 5.0], dtype=torch.float64)
    contrib = _orthogonal_columns(300, 5, 1) * stds + 2.0
    teacher = contrib.sum(1)
    one, zero = torch.ones((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    keep = lambda frac, least: choose_last_layer(contrib, zero, one, teacher, frac, least, "linear")  # noqa: E731
    # Ranked 0 (64), 2 (36), 4 (25), 1 (16), 3 (9): cumulative r^2 .427, .667, .833, .940, 1.
    assert keep(0.80, 1) == [0, 2, 4]
    assert keep(0.90, 1) == [0, 1, 2, 4]
    assert keep(0.95, 1) == [0, 1, 2, 3, 4]
    assert keep(0.40, 1) == [0]
    assert keep(0.40, 3) == [0, 2, 4]  # at least 3 filters
    assert keep(0.40, 9) == [0, 1, 2, 3, 4]
    # Through a softplus readout the same ranking holds and an r^2 near 1 needs every filter.
    soft = torch.nn.functional.softplus(teacher / 10) * 10
    assert choose_last_layer(contrib / 10, zero, torch.tensor(10.0, dtype=torch.float64), soft, 0.999, 1) == [
        0,
        1,
        2,
        3,
        4,
    ]


def _hand_built_network() -> tuple[CompactNet, torch.Tensor]:
    """Five layer-0 filters feeding four layer-1 filters; every answer of the pruning rule is known.

    Each image is constant over its 4x4 pixels; input channel j is 50 + s_j z_j with the z_j
    orthogonal, variance 1, and s = 4, 3, 2, 1, 5. conv0 copies channel j to filter j, batch
    norms pass values through (ReLU sees positive values only), depthwise gains are 1.
    Pointwise: layer-1 filters 0-2 each sum layer-0 filters 0-3 with weight 1/sqrt(3); layer-1
    filter 3 reads only layer-0 filter 4. Readout weights 3, 2, 1, 0 for layer-1 filters 0-3.
    So filter 3 of layer 1 contributes nothing and goes; then layer-0 filter 4, the one with the
    largest variance of its own, feeds nothing kept and scores 0; the others score s_j^2 * 1:
    16, 9, 4, 1 of 30.
    """
    spec = CompactSpec(5, 4, (5, 4), (1, 1), 1, readout="linear")
    m = CompactNet(spec)
    a = 3**-0.5
    with torch.no_grad():
        m.conv0.weight.copy_(torch.eye(5)[:, :, None, None])
        for bn in (m.bn0, m.norms[0]):
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0)
            bn.weight.fill_(1.0)
            bn.bias.zero_()
        m.norms[0].bias.fill_(100.0)  # layer-1 values stay positive: ReLU passes them
        m.depthwise[0].weight.fill_(1.0)
        pw = torch.zeros(4, 5)
        pw[:3, :4] = a
        pw[3, 4] = 1.0
        m.pointwise[0].weight.copy_(pw[:, :, None, None])
        m.readout_weight.copy_(torch.tensor([3.0, 2.0, 1.0, 0.0])[:, None, None].expand(4, 4, 4) / 16)
        m.readout_bias.zero_()
        m.rate_scale.fill_(1.0)
    z = _orthogonal_columns(200, 5, 0).float()
    x = (50.0 + z * torch.tensor([4.0, 3.0, 2.0, 1.0, 5.0]))[:, :, None, None].expand(200, 5, 4, 4)
    return m.eval(), x.contiguous()


def test_authors_rule_on_a_hand_built_network_gives_the_known_answer():
    m, x = _hand_built_network()
    teacher = m(x).detach()
    res = prune_model(m, x, teacher, keep_r2_frac=0.9, keep_variance_frac=0.9, min_filters=3)
    assert res.kept == [[0, 1, 2], [0, 1, 2]], res.kept  # fv 29/30 >= 0.9; 25/30 would not do
    assert res.filters_after == [3, 3]
    assert abs(res.explained[0] - 29 / 30) < 1e-4
    # The output is linear in layer 1, so its r^2 with the unpruned model is the fv kept, and
    # the removed filter's mean is folded in: the mean output is unchanged.
    assert abs(res.r2_before - 1.0) < 1e-6 and abs(res.r2_after - 29 / 30) < 1e-3, res.r2_after
    torch.testing.assert_close(res.model(x).mean(), teacher.mean(), rtol=1e-4, atol=1e-3)
    assert res.params_after == count_parameters(res.model) < res.params_before
    # Other thresholds, other known answers.
    keeps = lambda frac, least: prune_model(m, x, teacher, 0.9, frac, least).kept[0]  # noqa: E731
    assert keeps(0.97, 3) == [0, 1, 2, 3]  # 29/30 < 0.97 <= 30/30
    assert keeps(0.80, 2) == [0, 1]  # 25/30 >= 0.80
    assert keeps(0.50, 1) == [0]  # 16/30 >= 0.50
    assert keeps(0.50, 3) == [0, 1, 2]  # never fewer than 3


def test_explained_variance_curve_and_statistics_match_a_direct_computation():
    spec = CompactSpec(3, 12, (6, 5, 4), (1, 2, 1), 3)
    m = _trained_looking_model(spec, 2)
    x = torch.rand(40, 3, 12, 12)
    stats, contrib = network_statistics(StackedCompact.from_models([m]), x, batch=16)
    acts = layer_activations(m, x)
    assert contrib.shape == (40, 1, 4)
    torch.testing.assert_close(contrib[:, 0], (acts[-1] * m.readout_weight).flatten(2).sum(2), rtol=1e-4, atol=1e-4)
    g = torch.Generator().manual_seed(0)
    for layer, rows in [(0, [0, 1, 2, 3, 4]), (1, [0, 2, 3])]:
        d = m.depthwise[layer](acts[layer]).detach().double()
        n_f = d.shape[1]
        s = stats[layer]
        torch.testing.assert_close(s.mean[0].double(), d.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
        pos_var = ((d - d.mean(0)) ** 2).sum(dim=(0, 2, 3))
        torch.testing.assert_close(s.position_variance[0].double(), pos_var, rtol=1e-4, atol=1e-4)
        w = m.pointwise[layer].weight[rows, :, 0, 0].detach().double()
        order = torch.randperm(n_f, generator=g).tolist()
        curve = explained_variance_curve(s.gram[0], w, order)
        y = torch.einsum("of,bfhw->bohw", w, d)
        yc = y - y.mean(dim=(0, 2, 3), keepdim=True)
        for kept in range(n_f + 1):
            w_kept = w.clone()
            w_kept[:, order[kept:]] = 0.0
            yk = torch.einsum("of,bfhw->bohw", w_kept, d)
            direct = 1 - ((yk - yk.mean(dim=(0, 2, 3), keepdim=True) - yc) ** 2).sum() / (yc**2).sum()
            assert abs(float(curve[kept]) - float(direct)) < 1e-4, (layer, kept, float(curve[kept]), float(direct))


def _trained_looking_model(spec: CompactSpec, seed: int) -> CompactNet:
    m = CompactNet(spec, seed=seed)
    m.set_mean_rate(20.0)
    with torch.no_grad():
        m.readout_weight.normal_(0, 0.2, generator=torch.Generator().manual_seed(seed))
    return m.eval()


def test_slicing_all_filters_is_identity_and_constant_filters_are_folded_exactly():
    spec = CompactSpec(3, 12, (5, 6, 4), (1, 2, 1), 1)  # 1x1 kernels: no borders, folding is exact
    m = _trained_looking_model(spec, 0)
    x = torch.rand(30, 3, 12, 12)
    same = slice_model(m, [list(range(f)) for f in spec.filters])
    torch.testing.assert_close(same(x), m(x))
    with torch.no_grad():  # filter 2 of layer 0 and filter 1 of the last layer become constants
        m.bn0.weight[2] = 0.0
        m.bn0.bias[2] = 0.7
        m.norms[1].weight[1] = 0.0
        m.norms[1].bias[1] = 0.3
    acts = layer_activations(m, x)
    keep = [[0, 1, 3, 4], list(range(6)), [0, 2, 3]]
    contrib = (acts[-1] * m.readout_weight).flatten(2).sum(2)
    dw_means = [dw(a).mean(dim=(0, 2, 3)) for dw, a in zip(m.depthwise, acts)]
    pruned = slice_model(m, keep, depthwise_means=dw_means, mean_contrib=contrib.mean(0))
    assert pruned.spec.filters == (4, 6, 3)
    torch.testing.assert_close(pruned(x), m(x), rtol=1e-4, atol=1e-4)


def test_prune_model_shrinks_keeps_minimum_and_tracks_the_teacher():
    spec = CompactSpec(3, 16, (10, 10, 10), (1, 2, 1), 3)
    m = _trained_looking_model(spec, 3)
    x = torch.rand(300, 3, 16, 16)
    teacher = m(x).detach()
    res = prune_model(m, x, teacher, 0.9, 0.9, min_filters=3)
    assert res.filters_before == [10, 10, 10]
    assert all(3 <= f <= 10 for f in res.filters_after)
    assert sum(res.filters_after) < 30 and res.params_after < res.params_before
    assert res.params_after == count_parameters(res.model)
    assert res.r2_before > 0.999
    # The last layer's rule holds by construction; earlier cuts cost a bit more before retraining.
    assert res.r2_after > 0.5
    assert res.model(x).shape == (300,)


def test_distill_then_retrain_pruned_student_recovers_the_teacher():
    torch.manual_seed(0)
    spec = CompactSpec(3, 16, (6, 6, 6), (2, 2, 1), 3)

    def teacher(x):  # a neuron driven by the brightness of the top-left quadrant
        return (5.0 + 60.0 * x[:, :, :8, :8].mean(dim=(1, 2, 3)))[:, None]

    rng = np.random.default_rng(0)
    levels = np.kron(rng.random((150, 2, 2)), np.ones((8, 8)))[..., None] + rng.normal(0, 0.1, (150, 16, 16, 3))
    pool = np.clip(np.rint(255 * levels), 0, 255).astype(np.uint8)
    images = augmented_images(pool, 2, seed=0)
    assert images.shape == (450, 16, 16, 3) and images.dtype == np.uint8
    dev = torch.device("cpu")
    targets = teacher_rates(teacher, images, dev)
    assert targets.shape == (450, 1)
    (student,) = distill(images, targets, spec, steps=100, lr=1e-2, batch_size=64, device=dev)
    x = torch.from_numpy(pool[:100]).permute(0, 3, 1, 2).float() / 255
    t = teacher(x)[:, 0]
    r_student = np.corrcoef(student(x).detach().numpy(), t.numpy())[0, 1]
    assert r_student > 0.9, r_student
    res = prune_model(student, x, student(x).detach(), 0.9, 0.9, 3)
    assert res.params_after < res.params_before
    (retrained,) = fit_students([res.model], images, targets, steps=50, lr=3e-3, batch_size=64, device=dev)
    r_retrained = np.corrcoef(retrained(x).detach().numpy(), t.numpy())[0, 1]
    assert r_retrained > 0.9, (r_retrained, r_student)


def test_compress_from_arrays_end_to_end(tmp_path):
    from models.compress import compress_from_arrays
    from models.save import load_model

    rig, imgs, counts = small_compress_session(
        4,
        300,
        kind="compact",
        filters_per_layer=6,
        n_layers=3,
        strides=[2, 2, 1],
        kernel_size=3,
        ensemble_size=2,
        form="loop",
        compression=dict(
            distill_steps=60,
            retrain_steps=30,
            student_readout="linear",
            smooth_sigma=0.5,
            smooth_every_steps=20,
            prune_images=200,
            distill_augmented_copies=2,
            distill_form="loop",
        ),
    )
    lines = []
    report = compress_from_arrays(imgs, counts, 0.15, rig, tmp_path, ensemble_steps=60, mei_steps=10, log=lines.append)
    rows = report["neurons"]
    assert len(rows) == 4 and any("median parameters" in line for line in lines[-1].splitlines())
    for n, row in enumerate(rows):
        assert row["params_after"] <= row["params_before"]
        assert all(f >= 3 for f in row["filters_after"])
        assert [len(k) for k in row["filters_kept"]] == row["filters_after"]
        for key in ("r_truth_teacher", "r_truth_unpruned", "r_truth_pruned"):
            assert -1 <= row[key] <= 1
        for key in ("r2_teacher_unpruned", "r2_teacher_pruned", "r2_teacher_pruned_not_retrained"):
            assert 0 <= row[key] <= 1
        # The page's MEI stays within the trained range or says it does not.
        assert row["mei_extrapolates"] == (row["mei_predicted_hz"] > 1.02 * row["trained_rate_range_hz"][1])
        model, meta = load_model(tmp_path / f"neuron_{n:03d}.pt")
        assert list(model.spec.filters) == row["filters_after"] and meta["neuron"] == n
        assert model.spec.readout == "linear"
        assert (tmp_path / f"neuron_{n:03d}.png").stat().st_size > 1000
    assert (tmp_path / "models.pt2").exists()
    # Retraining changed the pruned models, and the report keeps them apart from the pruned ones before it.
    assert all(r["r2_teacher_pruned_not_retrained"] != r["r2_teacher_pruned"] for r in rows)
    assert report["distill"]["form"] == "loop"
    # The distillation set: pool and session images, and two augmented copies of each.
    from stimulus.pools import make_pools

    assert report["n_distill_images"] == 3 * (len(make_pools(rig.images).train) + len(imgs))
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["goals"]["param_ratio_met"] == (on_disk["goals"]["median_param_ratio"] >= 10)
    assert set(on_disk["stage_seconds"]) == {
        "teacher",
        "teacher_rates",
        "distil",
        "prune",
        "retrain",
        "evaluate",
        "pages",
    }
    # The teacher learned something about the ground truth on held-out images, and the students
    # learned it from the teacher.
    assert np.median([r["r_truth_teacher"] for r in rows]) > 0.2
    assert np.median([r["r2_teacher_unpruned"] for r in rows]) > 0.3


def test_teacher_starts_from_the_sessions_checkpoint_when_it_fits(tmp_path):
    from models.compress import _teacher
    from models.config import ModelConfig
    from models.online import CompactOnline

    cfg = ModelConfig(
        kind="compact",
        filters_per_layer=3,
        n_layers=2,
        strides=[2, 2],
        kernel_size=3,
        ensemble_size=2,
        form="loop",
        min_responses_to_train=4,
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    counts = rng.poisson(3.0, (20, 2)).astype(np.float32)
    worker = CompactOnline(cfg, 2, (8, 8, 3))
    worker.add_responses(images, counts, 0.15)
    worker.train(5)
    path = tmp_path / "model.pt"
    torch.save({"kind": "compact", "n_neurons": 2, "model": worker.weights_state()}, path)
    x = torch.rand(4, 3, 8, 8)
    lines = []
    online, source = _teacher(cfg.model_copy(update={"form": "auto"}), 2, (8, 8, 3), path, lines.append)
    assert "checkpoint" in source and online.steps_done == 5
    torch.testing.assert_close(online.snapshot().rates(x), worker.snapshot().rates(x))
    # Another architecture (e.g. a --rig with other sizes) or another population: trained from scratch.
    other, source = _teacher(cfg.model_copy(update={"filters_per_layer": 4}), 2, (8, 8, 3), path, lines.append)
    assert source == "trained from scratch" and other.steps_done == 0 and "does not fit" in lines[-1]
    assert _teacher(cfg, 3, (8, 8, 3), path, lines.append)[1] == "trained from scratch"


def test_compress_a_chosen_subset_of_neurons(tmp_path):
    """--neurons 3,1: the teacher learns all four neurons as before; students, files, rows and the truth
    they are compared with are those of neurons 3 and 1."""
    from models.compress import check_neurons, compress_from_arrays, parse_neurons
    from models.save import load_model

    rig, imgs, counts = small_compress_session(
        4,
        300,
        kind="compact",
        filters_per_layer=6,
        n_layers=3,
        strides=[2, 2, 1],
        kernel_size=3,
        ensemble_size=2,
        form="loop",
        compression=dict(distill_steps=20, retrain_steps=10, prune_images=100),
    )
    kw = dict(ensemble_steps=30, mei_steps=3, log=lambda *_: None)
    every = compress_from_arrays(imgs, counts, 0.15, rig, tmp_path / "all", **kw)["neurons"]
    some = compress_from_arrays(imgs, counts, 0.15, rig, tmp_path / "some", neurons=[3, 1], **kw)["neurons"]
    assert [r["neuron"] for r in some] == [3, 1]
    for row in some:
        same = every[row["neuron"]]
        # The same teacher, compared with the same neuron's true rates.
        assert row["r_truth_teacher"] == pytest.approx(same["r_truth_teacher"], abs=1e-6)
        assert row["trained_rate_range_hz"] == pytest.approx(same["trained_rate_range_hz"], rel=1e-6)
        model, meta = load_model(tmp_path / "some" / f"neuron_{row['neuron']:03d}.pt")
        assert meta["neuron"] == row["neuron"]
    assert sorted(p.name for p in (tmp_path / "some").glob("neuron_*.png")) == ["neuron_001.png", "neuron_003.png"]
    assert parse_neurons("0-2,9") == [0, 1, 2, 9]
    for text in ("a", "3-1", "1,,2"):
        with pytest.raises(ValueError, match="not a neuron index"):
            parse_neurons(text)
    with pytest.raises(ValueError, match=r"\[4\] were not recorded: the session has neurons 0-3"):
        check_neurons([1, 4], 4)
    with pytest.raises(ValueError, match="twice"):
        check_neurons([1, 1], 4)
