"""`cortexloop interrogate` end to end on a small compress output: two tiny compact models, a teacher and the
virtual cortex at 16x16 px. What it must write: interrogate.json with the truth's curves beside the models',
each neuron's interpretation in report.json, the pages, the units' columns in NWB's sense (records/nwb.py reads
them) and the HTML report's links."""

from __future__ import annotations

import json

import numpy as np
import pytest

from controller.config import RigConfig, with_overrides
from models.compact import CompactNet, CompactSpec
from models.compress import save_teacher
from models.factory import make_online_model
from models.interrogate import format_table, interrogate
from models.save import save_model
from records.nwb import interpretations
from records.report import interpretation_links

EXPERIMENTS = ["natural", "size", "bars", "hue", "occlusion"]


@pytest.fixture(scope="module")
def interrogated(tmp_path_factory):
    rig = with_overrides(RigConfig(), images={"size_px": 16, "pool_size": 60, "test_size": 10})
    pop = rig.cortex.population.model_copy(update={"n_neurons": 2, "calibration_images": 16})
    rig = rig.model_copy(update={"cortex": rig.cortex.model_copy(update={"population": pop})})
    out = tmp_path_factory.mktemp("session") / "compact"
    out.mkdir()
    spec = CompactSpec(in_channels=3, image_size=16, filters=(4, 4, 3), strides=(2, 1, 1))
    rows = []
    for n in range(2):
        save_model(CompactNet(spec, seed=n), out / f"neuron_{n:03d}.pt", meta={"neuron": n})
        rows.append({"neuron": n, "trained_rate_range_hz": [0.0, 50.0]})
    (out / "report.json").write_text(json.dumps({"neurons": rows}))
    save_teacher(make_online_model(rig.model, 2, (16, 16, 3)), 2, (16, 16, 3), out / "teacher.pt")
    # Experiments whose stimuli are few (the full battery is some 1,300 images a neuron plus the shared ones).
    result = interrogate(out, rig, EXPERIMENTS, log=lambda s: None, mei_steps=3)
    return out, result


def test_it_writes_curves_families_and_pages(interrogated):
    out, result = interrogated
    saved = json.loads((out / "interrogate.json").read_text())
    assert [r["neuron"] for r in saved["neurons"]] == [0, 1]
    assert set(saved["batteries"]) == {"compact", "teacher", "truth_on_compact", "truth"}
    assert list(saved["batteries"]["compact"]["0"]["experiments"]) == EXPERIMENTS
    for row in saved["neurons"]:
        assert row["compact"]["family"] in saved["families"]
        assert row["truth"]["type"] in ("oriented", "curvature", "dot", "texture", "colour", "cnn")
        assert {"size", "bar_length", "hue", "occlusion"} <= set(row["compact"]["curve_r"])
    # The truth on the model's stimuli: the same x values, point for point.
    a = saved["batteries"]["compact"]["1"]["experiments"]["size"]["curves"]["size"]["x"]
    b = saved["batteries"]["truth_on_compact"]["1"]["experiments"]["size"]["curves"]["size"]["x"]
    assert a == b
    report = json.loads((out / "report.json").read_text())
    assert all("interpretation" in r and r["interpretation"]["words"] for r in report["neurons"])
    assert "summary" in report["interpretation"] and "goals" in report["interpretation"]
    assert (out / "interpret" / "neuron_000.png").stat().st_size > 10_000
    assert (out / "interpret" / "population.png").exists()
    assert "typed as the true family" in format_table(result)


def test_nwb_and_report_read_the_interpretation(interrogated):
    out, result = interrogated
    got = interpretations(out.parent)
    assert set(got) == {0, 1} and all(family and words for family, words in got.values())
    links = interpretation_links(out, out.parent)
    assert "compact/interpret/neuron_001.png" in links and "neurons grouped by type" in links
    assert interpretation_links(out.parent / "nowhere", out.parent) == ""
    assert np.isfinite([r["compact"]["fingerprint"]["max_evoked_hz"] for r in result["neurons"]]).all()
