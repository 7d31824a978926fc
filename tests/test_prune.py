"""Pruning rule (Cowley et al. 2026) and distillation."""
import numpy as np
import torch

from models.compact import CompactNet, CompactSpec, count_parameters
from models.distill import augmented_images, distill, fit_students, teacher_rates
from models.prune import choose_by_variance, choose_last_layer, layer_activations, prune_model, slice_model

# As the model worker does (ModelConfig.cpu_threads): one thread is fastest for these small models.
torch.set_num_threads(1)


def test_variance_rule_keeps_fewest_filters_holding_the_fraction():
    g = torch.Generator().manual_seed(0)
    stds = torch.tensor([0.1, 3.0, 0.2, 2.0, 1.0, 0.05])  # variances 9, 4, 1, ... of total ~14.05
    acts = torch.randn(400, 6, 4, 4, generator=g) * stds[None, :, None, None]
    assert choose_by_variance(acts, 0.9, 1) == [1, 3]  # 13/14.05 = 0.925 >= 0.9
    assert choose_by_variance(acts, 0.95, 1) == [1, 3, 4]
    assert choose_by_variance(acts, 0.5, 3) == [1, 3, 4]  # at least 3 filters
    assert choose_by_variance(acts, 0.5, 10) == list(range(6))


def test_last_layer_rule_keeps_r2_fraction():
    g = torch.Generator().manual_seed(1)
    spread = torch.tensor([2.0, 0.05, 1.0, 0.02, 0.5])
    contrib = torch.randn(500, 5, generator=g) * spread
    teacher = torch.nn.functional.softplus(contrib.sum(1)) * 10
    # Teacher is the full model, so the unpruned r^2 is 1.
    assert choose_last_layer(contrib, torch.zeros(()), torch.tensor(10.0), teacher, 0.9, 1) == [0, 2]
    assert choose_last_layer(contrib, torch.zeros(()), torch.tensor(10.0), teacher, 0.9, 3) == [0, 2, 4]
    assert choose_last_layer(contrib, torch.zeros(()), torch.tensor(10.0), teacher, 0.9999, 1) == [0, 1, 2, 4] or \
        choose_last_layer(contrib, torch.zeros(()), torch.tensor(10.0), teacher, 0.9999, 1) == [0, 1, 2, 3, 4]


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
    pruned = slice_model(m, keep, mean_acts=[a.mean(dim=(0, 2, 3)) for a in acts], mean_contrib=contrib.mean(0))
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
    student, = distill(images, targets, spec, steps=100, lr=1e-2, batch_size=64, device=dev)
    x = torch.from_numpy(pool[:100]).permute(0, 3, 1, 2).float() / 255
    t = teacher(x)[:, 0]
    r_student = np.corrcoef(student(x).detach().numpy(), t.numpy())[0, 1]
    assert r_student > 0.9, r_student
    res = prune_model(student, x, student(x).detach(), 0.9, 0.9, 3)
    assert res.params_after < res.params_before
    retrained, = fit_students([res.model], images, targets, steps=50, lr=3e-3, batch_size=64, device=dev)
    r_retrained = np.corrcoef(retrained(x).detach().numpy(), t.numpy())[0, 1]
    assert r_retrained > 0.9, (r_retrained, r_student)


def test_compress_from_arrays_end_to_end(tmp_path):
    from acquisition.population import Population
    from controller.compress import compress_from_arrays
    from controller.config import RigConfig, with_overrides
    from models.save import load_model
    from stimulus.pools import make_pools

    rig = with_overrides(RigConfig(), images={"size_px": 16, "pool_size": 200, "test_size": 50},
                         model={"kind": "compact", "filters_per_layer": 6, "n_layers": 3, "strides": [2, 2, 1],
                                "kernel_size": 3, "ensemble_size": 2, "distill_steps": 60, "retrain_steps": 30, "form": "loop"})
    pop_cfg = rig.cortex.population.model_copy(update={"n_neurons": 4})
    rig = rig.model_copy(update={"cortex": rig.cortex.model_copy(update={"population": pop_cfg})})
    pools = make_pools(rig.images)
    rng = np.random.default_rng(0)
    imgs = pools.train[rng.integers(0, 200, 300)]
    counts = rng.poisson(Population(pop_cfg, 16, True).rates(imgs) * 0.15).astype(np.float32)
    lines = []
    report = compress_from_arrays(imgs, counts, 0.15, rig, tmp_path, ensemble_steps=60, mei_steps=10,
                                  log=lines.append)
    rows = report["neurons"]
    assert len(rows) == 4 and "median parameters" in lines[-1]
    for n, row in enumerate(rows):
        assert row["params_after"] <= row["params_before"]
        assert all(f >= 3 for f in row["filters_after"])
        assert -1 <= row["corr_truth_compact"] <= 1 and 0 <= row["r2_teacher_pruned_retrained"] <= 1
        model, meta = load_model(tmp_path / f"neuron_{n:03d}.pt")
        assert list(model.spec.filters) == row["filters_after"] and meta["neuron"] == n
        assert (tmp_path / f"neuron_{n:03d}.png").stat().st_size > 1000
    assert (tmp_path / "models.pt2").exists() and (tmp_path / "report.json").exists()
    # The teacher learned something about the ground truth on held-out images.
    assert np.median([r["corr_truth_teacher"] for r in rows]) > 0.2
