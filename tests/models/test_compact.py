"""Compact CNN: shapes, the stacked form equals the loop form, save/load without cortexloop."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from models.compact import CompactNet, CompactSpec, count_parameters, make_models
from models.config import CompressionConfig, ModelConfig
from models.save import export_models, load_model, save_model
from models.stacked import LoopForm, StackedCompact

SMALL = CompactSpec(in_channels=3, image_size=16, filters=(4, 5, 3), strides=(1, 2, 1), kernel_size=3)


def test_shapes_and_output_is_nonnegative():
    model = CompactNet(SMALL, seed=0)
    x = torch.rand(7, 3, 16, 16)
    y = model(x)
    assert y.shape == (7,)
    assert (y >= 0).all()
    assert model.features(x).shape == (7, 3, SMALL.map_size, SMALL.map_size)
    assert SMALL.map_size == 8


def test_spec_from_config_pads_strides_and_reads_image_shape():
    cfg = ModelConfig(kind="compact", n_layers=6, filters_per_layer=4, strides=[2, 2])
    spec = CompactSpec.from_config(cfg, (32, 32, 1))
    assert spec.in_channels == 1 and spec.filters == (4,) * 6 and spec.strides == (2, 2, 1, 1, 1, 1)
    assert spec.map_size == 8
    with pytest.raises(ValueError):
        CompactSpec.from_config(cfg, (32, 24, 3))


def test_paper_sizes_give_a_28x28_map():
    spec = CompactSpec(3, 112, (100,) * 5, (1, 2, 2, 1, 1), 5)
    assert spec.map_size == 28


def test_same_seed_same_weights_different_seed_different():
    a, b, c = CompactNet(SMALL, seed=3), CompactNet(SMALL, seed=3), CompactNet(SMALL, seed=4)
    assert torch.equal(a.conv0.weight, b.conv0.weight)
    assert not torch.equal(a.conv0.weight, c.conv0.weight)


@pytest.mark.parametrize("training", [True, False])
def test_stacked_equals_loop_on_the_same_weights(training):
    torch.manual_seed(0)
    models = make_models(SMALL, 5, seed=1)
    for i, m in enumerate(models):
        m.set_mean_rate(5.0 + i)
        with torch.no_grad():  # non-trivial batch-norm statistics and readout
            for bn in [m.bn0, *m.norms]:
                bn.running_mean.uniform_(-0.2, 0.2)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
            m.readout_weight.normal_(0, 0.3)
    loop = LoopForm(models).train(training)
    stacked = StackedCompact.from_models(models).train(training)
    # The round trip back to separate models is exact.
    for m0, m1 in zip(models, stacked.to_models()):
        for (k, v0), v1 in zip(m0.state_dict().items(), m1.state_dict().values()):
            assert torch.equal(v0, v1), k
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    a, b = loop(x), stacked(x)
    assert a.shape == b.shape == (6, 5)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # Gradients with respect to the images agree too (synthesis relies on them).
    (ga,) = torch.autograd.grad(a[:, 2].sum(), x)
    (gb,) = torch.autograd.grad(b[:, 2].sum(), x)
    torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)
    # Selecting models computes only those, with the same numbers.
    torch.testing.assert_close(stacked(x, [4, 1]), loop(x, [4, 1]), rtol=1e-5, atol=1e-5)


def test_one_training_step_keeps_the_forms_equal():
    models = make_models(SMALL, 3, seed=2)
    loop = LoopForm([CompactNet(SMALL) for _ in models])
    for dst, src in zip(loop.models, models):
        dst.load_state_dict(src.state_dict())
    stacked = StackedCompact.from_models(models)
    x, t = torch.rand(8, 3, 16, 16), torch.rand(8, 3) * 5
    for net in (loop, stacked):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        loss = ((net(x) - t) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for m0, m1 in zip(loop.models, stacked.to_models()):
        torch.testing.assert_close(m0.conv0.weight, m1.conv0.weight, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(m0.readout_weight, m1.readout_weight, rtol=1e-4, atol=1e-6)


# Loads the saved files with torch alone: no cortexloop package on the path.
FRESH_LOADER = r"""
import json, sys
import torch
import torch.nn.functional as F
assert not any(m == "models" or m.startswith("models.") for m in sys.modules)
pt, pt2, xs = sys.argv[1], sys.argv[2], sys.argv[3]
rec = torch.load(pt, weights_only=True)
assert rec["format"] == "cortexloop.compact/2"
spec, sd = rec["spec"], rec["state_dict"]
k = spec["kernel_size"]; pad = k // 2

def bn(x, p):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                        False, 0.0, 1e-5)

def rates(x):
    h = F.relu(bn(F.conv2d(x, sd["conv0.weight"], stride=spec["strides"][0], padding=pad), "bn0"))
    for i in range(len(spec["filters"]) - 1):
        h = F.conv2d(h, sd[f"depthwise.{i}.weight"], stride=spec["strides"][i + 1], padding=pad, groups=h.shape[1])
        h = F.relu(bn(F.conv2d(h, sd[f"pointwise.{i}.weight"]), f"norms.{i}"))
    drive = (h * sd["readout_weight"]).flatten(1).sum(1) + sd["readout_bias"]
    return sd["rate_scale"] * (drive if spec["readout"] == "linear" else F.softplus(drive))

x = torch.load(xs, weights_only=True)
extra = {"cortexloop.json": ""}
program = torch.export.load(pt2, extra_files=extra)
info = json.loads(extra["cortexloop.json"])
print(json.dumps({"plain": rates(x).tolist(), "exported": program.module()(x).tolist(),
                  "meta": info["meta"], "n_specs": len(info["specs"])}))
"""


def test_save_and_load_in_a_fresh_process_without_cortexloop(tmp_path):
    model = CompactNet(CompactSpec(3, 16, (4, 5, 3), (1, 2, 1), 3, readout="linear"), seed=5)
    model.set_mean_rate(12.0, 4.0)
    with torch.no_grad():
        model.readout_weight.normal_(0, 0.3)
        model.bn0.running_mean.uniform_(-0.1, 0.1)
    model.eval()
    x = torch.rand(4, 3, 16, 16)
    expected = model(x).detach()
    other = CompactNet(SMALL.with_filters([3, 3, 3]), seed=6).eval()  # a differently pruned softplus neighbour
    pt = save_model(model, tmp_path / "neuron_003.pt", meta={"neuron": 3})
    pt2 = export_models([model, other], tmp_path / "models.pt2", meta={"neurons": [3, 4]})
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "load.py"
    script.write_text(FRESH_LOADER)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, "-I", str(script), str(pt), str(pt2), str(tmp_path / "x.pt")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["meta"] == {"neurons": [3, 4]} and out["n_specs"] == 2
    np.testing.assert_allclose(out["plain"], expected.numpy(), rtol=1e-5)
    exported = np.asarray(out["exported"])
    assert exported.shape == (4, 2)
    np.testing.assert_allclose(exported[:, 0], expected.numpy(), rtol=1e-5)
    np.testing.assert_allclose(exported[:, 1], other(x).detach().numpy(), rtol=1e-5)
    # Our own loader gives the same model back.
    again, meta = load_model(pt)
    torch.testing.assert_close(again(x), expected)
    assert meta == {"neuron": 3} and count_parameters(again) == count_parameters(model)


def test_linear_readout_and_smoothing():
    spec = CompactSpec(3, 16, (4, 5, 3), (1, 2, 1), 3, readout="linear")
    m = CompactNet(spec, seed=1)
    m.set_mean_rate(20.0, 5.0)
    m.eval()
    x = torch.rand(6, 3, 16, 16)
    # Linear readout: rate = rate_scale * drive, which may go below zero; the start is the mean rate.
    torch.testing.assert_close(m(x), 5.0 * m.drive(x))
    with torch.no_grad():
        m.readout_weight.zero_()
    torch.testing.assert_close(m(x), torch.full((6,), 20.0))
    with pytest.raises(ValueError, match="readout"):
        CompactSpec(readout="relu")
    # Smoothing: a single tap spreads to its neighbours as scipy's Gaussian filter spreads it;
    # the full first conv is left alone.
    from scipy.ndimage import gaussian_filter

    with torch.no_grad():
        m.depthwise[0].weight.zero_()
        m.depthwise[0].weight[1, 0, 1, 1] = 1.0
        m.readout_weight[2, 3, 4] = 1.0
    conv0 = m.conv0.weight.clone()
    from models.compact import smooth_kernels

    smooth_kernels(m, 0.5)
    impulse = np.zeros((3, 3))
    impulse[1, 1] = 1.0
    np.testing.assert_allclose(m.depthwise[0].weight[1, 0].detach().numpy(), gaussian_filter(impulse, 0.5), rtol=1e-6)
    dw, ro = m.depthwise[0].weight.detach(), m.readout_weight.detach()
    assert dw[1, 0, 0, 1] > 0.05 and float(dw[0].abs().sum()) == 0.0
    assert ro[2, 3, 3] > 0.05 and ro[2, 3, 4] < 0.9
    assert torch.equal(m.conv0.weight, conv0)


def test_students_of_different_sizes_train_as_one_padded_stack():
    from models.distill import fit_students, pack, unpack

    small = CompactNet(SMALL.with_filters([2, 3, 1]), seed=1)
    big = CompactNet(SMALL, seed=2)
    for m in (small, big):
        m.set_mean_rate(10.0)
        with torch.no_grad():
            m.readout_weight.normal_(0, 0.3)
        m.eval()
    x = torch.rand(5, 3, 16, 16)
    net = pack([small, big]).eval()
    assert net.spec.filters == (4, 5, 3)
    # Padding changes nothing: the stack computes what the two models compute.
    torch.testing.assert_close(net(x), torch.stack([small(x), big(x)], 1), rtol=1e-5, atol=1e-5)
    back = unpack(net, [[2, 3, 1], [4, 5, 3]])
    assert back[0].spec.filters == (2, 3, 1)
    torch.testing.assert_close(back[0](x), small(x))
    # Training the stack keeps the padding at zero: the models cut back out still equal the stack.
    images = (np.random.default_rng(0).random((64, 16, 16, 3)) * 255).astype(np.uint8)
    targets = torch.rand(64, 2) * 10
    trained = fit_students(
        [small, big],
        images,
        targets,
        steps=5,
        lr=1e-2,
        batch_size=16,
        device=torch.device("cpu"),
        smooth_sigma=0.5,
        smooth_every=2,
    )
    assert [list(m.spec.filters) for m in trained] == [[2, 3, 1], [4, 5, 3]]
    assert not torch.equal(trained[0].conv0.weight, small.conv0.weight)
    again = pack(trained).eval()
    torch.testing.assert_close(again(x), torch.stack([trained[0](x), trained[1](x)], 1), rtol=1e-5, atol=1e-5)


def test_student_keys_give_the_paper_architecture_and_are_bounded():
    from pydantic import ValidationError

    from models.compact import student_spec

    cfg = ModelConfig(kind="compact", filters_per_layer=8, strides=[2, 2, 2, 1, 1])
    students = CompressionConfig(
        student_filters_per_layer=100, student_strides=[1, 2, 2, 1, 1], student_readout="linear", smooth_sigma=0.5
    )
    spec = student_spec(cfg, students, (112, 112, 3))
    assert spec == CompactSpec(3, 112, (100,) * 5, (1, 2, 2, 1, 1), 5, readout="linear")
    assert spec.map_size == 28
    # Defaults: the students are the ensemble's architecture.
    plain = ModelConfig(kind="compact")
    assert student_spec(plain, CompressionConfig(), (32, 32, 3)) == CompactSpec.from_config(plain, (32, 32, 3))
    for bad in (
        {"smooth_sigma": 5.0},
        {"student_readout": "relu"},
        {"student_strides": [1, 9]},
        {"student_filters_per_layer": 10_000},
        {"prune_images": 1},
        {"student_filter": 3},
    ):
        with pytest.raises(ValidationError):
            CompressionConfig(**bad)


def test_students_train_alike_as_a_loop_and_as_a_stack():
    """The loop form (students one after the other) computes the same steps as the padded stack."""
    from models.distill import fit_students

    def fresh():
        out = [CompactNet(SMALL.with_filters([2, 3, 1]), seed=1), CompactNet(SMALL, seed=2)]
        for m in out:
            m.set_mean_rate(10.0)
            with torch.no_grad():
                m.readout_weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(3))
        return out

    images = (np.random.default_rng(0).random((64, 16, 16, 3)) * 255).astype(np.uint8)
    targets = torch.rand(64, 2, generator=torch.Generator().manual_seed(4)) * 10
    kw = dict(steps=4, lr=1e-2, batch_size=16, device=torch.device("cpu"), smooth_sigma=0.5, smooth_every=2)
    stacked = fit_students(fresh(), images, targets, form="stacked", **kw)
    given = fresh()
    looped = fit_students(given, images, targets, form="loop", **kw)
    x = torch.rand(5, 3, 16, 16)
    # The students passed in are left as they were (compress reports them next to the retrained ones).
    for a, b in zip(given, fresh()):
        torch.testing.assert_close(a.eval()(x), b.eval()(x))
    for a, b in zip(stacked, looped):
        assert a.spec == b.spec
        torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-4)
    untrained = fresh()[0].eval()
    assert not torch.allclose(untrained(x), looped[0](x), atol=1e-3)
    # "auto" picks one of the two; an unknown schedule is refused by name.
    assert len(fit_students(fresh(), images, targets, form="auto", **kw)) == 2
    with pytest.raises(ValueError, match="schedule 'step'"):
        fit_students(fresh(), images, targets, schedule="step", **kw)


def test_cosine_schedule_warms_up_and_ends_at_one_percent(monkeypatch):
    from models import distill

    seen = []
    real_step = torch.optim.AdamW.step

    def record(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", record)
    images = (np.random.default_rng(0).random((32, 16, 16, 3)) * 255).astype(np.uint8)
    model = CompactNet(SMALL, seed=1)
    model.set_mean_rate(10.0)
    distill.fit_students(
        [model],
        images,
        torch.rand(32, 1) * 10,
        steps=40,
        lr=1e-2,
        batch_size=8,
        device=torch.device("cpu"),
        form="loop",
        schedule="cosine",
    )
    assert len(seen) == 40
    assert seen[0] == pytest.approx(1e-2 / 2) and seen[1] == pytest.approx(1e-2)  # 2 warm-up steps
    assert max(seen) == pytest.approx(1e-2) and seen[-1] < 1e-3 and seen[-1] >= 1e-4
    assert all(b <= a + 1e-12 for a, b in zip(seen[2:], seen[3:]))
