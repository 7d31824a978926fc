"""compress --cluster ray: the same results as a local run, a killed worker's task run again, a failed task named
in the report, and a second run into the same directory that does only the neurons not done."""

import json
import os
import sys
from pathlib import Path

import pytest
import ray
import torch

from tests.helpers import small_compress_session

SMALL = dict(
    kind="compact",
    filters_per_layer=4,
    n_layers=3,
    strides=[2, 2, 1],
    kernel_size=3,
    ensemble_size=2,
    form="loop",
    compression=dict(distill_steps=20, retrain_steps=10, prune_images=100, distill_form="loop"),
)
KW = dict(ensemble_steps=5, mei_steps=2, log=lambda *_: None)
# Per neuron, what must not depend on where or with which other neurons it was compressed.
EXACT = ("neuron", "params_before", "params_after", "filters_before", "filters_after", "teacher_to_compact")
CLOSE = (
    "r2_teacher_unpruned",
    "r2_teacher_pruned_not_retrained",
    "r2_teacher_pruned",
    "r_truth_teacher",
    "r_truth_unpruned",
    "r_truth_pruned",
    "trained_rate_range_hz",
)


# Ray starts its workers at niceness 15: beside busy processes of normal priority they get almost no CPU (420 s for
# this test beside two on 2 cores, 35 s quiet). The test's workers run at normal priority, as the rest of the suite.
@pytest.mark.timeout(900)
def test_on_a_local_ray_cluster(tmp_path, monkeypatch):
    """One test, so that one local Ray instance (2 CPUs, no dashboard) serves every check however the test run is
    spread over processes (starting one takes seconds)."""
    monkeypatch.setenv("RAY_worker_niceness", "0")
    session = small_compress_session(3, 120, **SMALL)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2)
    try:
        same_rows_and_models_as_a_local_run(session, tmp_path / "same")
        a_killed_workers_task_is_run_again(session, tmp_path / "killed")
        a_failed_task_is_named_and_a_second_run_does_only_the_rest(session, tmp_path / "resume")
    finally:
        ray.shutdown()


def same_rows_and_models_as_a_local_run(session, tmp_path):
    from models.compress import compress_from_arrays
    from models.compress_cluster import ray_runner
    from models.save import load_model

    rig, imgs, counts = session
    local = compress_from_arrays(imgs, counts, 0.15, rig, tmp_path / "local", **KW)
    cluster = compress_from_arrays(
        imgs, counts, 0.15, rig, tmp_path / "cluster", runner=ray_runner("ray", neurons_per_task=1), **KW
    )
    assert cluster["failed"] == [] and cluster["cluster"]["tasks"] == 3
    assert [r["neuron"] for r in cluster["neurons"]] == [0, 1, 2]
    for a, b in zip(local["neurons"], cluster["neurons"]):
        for key in EXACT:
            assert a[key] == b[key], key
        for key in CLOSE:
            assert b[key] == pytest.approx(a[key], abs=2e-3), key
        m_local, _ = load_model(tmp_path / "local" / f"neuron_{a['neuron']:03d}.pt")
        m_cluster, meta = load_model(tmp_path / "cluster" / f"neuron_{a['neuron']:03d}.pt")
        assert meta["neuron"] == a["neuron"]
        for (k, v), w in zip(m_local.state_dict().items(), m_cluster.state_dict().values()):
            torch.testing.assert_close(w, v, atol=2e-3, rtol=2e-3, msg=k)
        assert (tmp_path / "cluster" / f"neuron_{a['neuron']:03d}.png").stat().st_size > 1000
    assert (tmp_path / "cluster" / "models.pt2").exists()
    assert cluster["goals"]["median_params_after"] == local["goals"]["median_params_after"]
    # The teacher-to-compact ratio: the whole ensemble (2 members) against one compact model.
    row = cluster["neurons"][0]
    assert row["params_teacher_ensemble"] == 2 * row["params_teacher_member"]
    assert row["teacher_to_compact"] == pytest.approx(row["params_teacher_ensemble"] / row["params_after"], abs=0.1)
    on_disk = json.loads((tmp_path / "cluster" / "report.json").read_text())
    assert on_disk["teacher"]["params_ensemble"] == row["params_teacher_ensemble"]
    assert on_disk["goals"]["median_teacher_to_compact"] > on_disk["goals"]["median_member_to_compact"]
    assert on_disk["cluster"]["object_store_put_s"] >= 0 and set(on_disk["stage_seconds"]) >= {"teacher", "cluster"}


def a_killed_workers_task_is_run_again(session, tmp_path):
    from models.compress import compress_from_arrays
    from models.compress_cluster import ray_runner

    rig, imgs, counts = session
    tmp_path.mkdir()
    marker = tmp_path / "killed-once"

    def die_once(neurons):  # the first attempt's worker process dies mid-task, as a crashed or killed node would
        if not marker.exists():
            marker.write_text(str(neurons))
            os._exit(1)

    runner = ray_runner("ray", neurons_per_task=2, max_retries=2, on_task_start=die_once)
    report = compress_from_arrays(imgs, counts, 0.15, rig, tmp_path / "out", neurons=[2, 0], runner=runner, **KW)
    assert marker.exists() and report["failed"] == []
    assert [r["neuron"] for r in report["neurons"]] == [2, 0]


def a_failed_task_is_named_and_a_second_run_does_only_the_rest(session, tmp_path):
    from models.compress import compress_from_arrays
    from models.compress_cluster import ray_runner

    rig, imgs, counts = session
    out = tmp_path / "out"

    def fail_neuron_1(neurons):
        if 1 in neurons:
            raise RuntimeError("out of memory on this node")

    first = compress_from_arrays(
        imgs, counts, 0.15, rig, out, runner=ray_runner("ray", max_retries=0, on_task_start=fail_neuron_1), **KW
    )
    assert first["failed"] == [{"neuron": 1, "error": "compress: RuntimeError: out of memory on this node"}]
    assert [r["neuron"] for r in first["neurons"]] == [0, 2]
    assert sorted(p.name for p in out.glob("neuron_*.pt")) == ["neuron_000.pt", "neuron_002.pt"]
    written = {p: p.stat().st_mtime_ns for p in out.glob("neuron_00[02].*")}

    second = compress_from_arrays(imgs, counts, 0.15, rig, out, runner=ray_runner("ray"), **KW)
    assert second["failed"] == [] and second["resumed"] == [0, 2]
    assert [r["neuron"] for r in second["neurons"]] == [0, 1, 2] and second["cluster"]["tasks"] == 1
    assert "run before" in second["teacher_from"]  # the teacher's rates of the first run, not a new teacher
    assert {p: p.stat().st_mtime_ns for p in written} == written  # the neurons done were left as they were
    # Other settings into the same directory are refused rather than mixed with the neurons done.
    other = rig.model_copy(update={"compression": rig.compression.model_copy(update={"retrain_steps": 11})})
    with pytest.raises(SystemExit, match="other settings"):
        compress_from_arrays(imgs, counts, 0.15, other, out, **KW)


def test_without_ray_the_cluster_option_says_how_to_install_it(monkeypatch):
    from models.compress import compress_main
    from models.compress_cluster import parse_cluster

    assert parse_cluster("ray") is None and parse_cluster("ray:10.0.0.5:6379") == "10.0.0.5:6379"
    with pytest.raises(SystemExit, match="the only cluster kind is ray"):
        compress_main(["no-session", "--cluster", "spark"])
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as where it is not installed
    with pytest.raises(SystemExit, match=r"pip install 'cortexloop\[cluster\]'"):
        compress_main([str(Path("no-session")), "--cluster", "ray"])
