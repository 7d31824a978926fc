"""The selection benchmarks run the product's engine (in process, virtual clock), not a copy of the loop."""

import json
import sqlite3


def test_efficiency_benchmark_runs_its_arms_through_the_engine_on_the_same_budget(tmp_path):
    from bench.efficiency import main
    from bench.sessions import DEFAULT_RIG
    from controller.config import load_rig

    default_kind = load_rig(DEFAULT_RIG).model.kind

    arms = ["random-natural", "random-gaudy", "closed-loop-natural"]
    closed = arms[-1]
    out = tmp_path / "eff.json"
    # The same arms, seeds and store each run: the second run reuses what the first stored.
    args = ["--arms", *arms, "--trials", "6", "--eval-every", "3", "--neurons", "3", "--pool-size", "80"]
    args += ["--size-px", "16", "--candidates", "40", "--test-size", "30", "--seeds", "0", "1"]
    args += ["--store", str(tmp_path / "s"), "--model-driven-after", "off"]  # 6 trials: no room for a cold start
    assert main([*args, "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["engine_mode"] == "in-process"
    assert (tmp_path / "eff.png").stat().st_size > 1000  # the learning curves, next to the JSON
    for arm in arms:
        assert len(res["runs"][arm]) == 2  # one run per paired seed
        for run in res["runs"][arm]:
            assert run["trials"] == [3, 6] and run["status"] == "completed" and run["engine_mode"] == "in-process"
            # The rig file's online model (what a session uses by default), not the ridge baseline.
            assert run["model_kind"] == default_kind != "baseline"
        s = res["summary"]["arms"][arm]
        assert s["auc_ci95"][0] <= s["auc_mean"] <= s["auc_ci95"][1]
        assert len(s["trials_to_target"]) == 2
    # The first two plans are asked for before any response exists (queue depth 2): random images, then the
    # closed loop's own choices. Every arm got the same training steps at each seed.
    assert res["runs"][closed][0]["images_by_kind"] == {"random": 10, "selected": 20}
    assert res["runs"]["random-natural"][0]["images_by_kind"] == {"random": 30}
    assert res["runs"]["random-natural"][0]["gaudy_images"] == 0
    assert res["runs"]["random-gaudy"][0]["gaudy_images"] == 30
    steps = {res["runs"][a][1]["training_steps"] for a in arms}
    assert len(steps) == 1 and steps.pop() > 0
    # The best random arm reaches its own final accuracy within the budget by definition.
    best = res["summary"]["best_random_arm"]
    assert res["summary"]["arms"][best]["reached"] == 2
    assert "goal_met" in res["summary"]["comparisons"][closed][f"trial ratio vs {best}"]
    # Each arm is a stored session like any other.
    db = sqlite3.connect(tmp_path / "s" / f"{closed}-seed1" / "session.sqlite")
    assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 30
    assert db.execute("SELECT value FROM meta WHERE key='engine_mode'").fetchone()[0] == "in-process"
    # A second run with the same store reuses the arms already done, with the same figures.
    out2 = tmp_path / "eff2.json"
    assert main([*args, "--json", str(out2)]) == 0
    res2 = json.loads(out2.read_text())
    assert all(r.get("reused") for rs in res2["runs"].values() for r in rs)
    assert res2["summary"]["arms"] == res["summary"]["arms"]
    # A run cut short is summarised from what the store holds: only the seeds that have every arm.
    out3 = tmp_path / "eff3.json"
    assert (
        main(
            [
                "--arms",
                *arms,
                "--trials",
                "6",
                "--eval-every",
                "3",
                "--neurons",
                "3",
                "--pool-size",
                "80",
                "--size-px",
                "16",
                "--candidates",
                "40",
                "--test-size",
                "30",
                "--seeds",
                "0",
                "1",
                "7",
                "--store",
                str(tmp_path / "s"),
                "--model-driven-after",
                "off",
                "--from-store",
                "--json",
                str(out3),
            ]
        )
        == 0
    )
    assert json.loads(out3.read_text())["seeds"] == [0, 1]


def test_discrimination_benchmark_runs_through_the_engine_and_designed_images_win(tmp_path):
    from bench.discrimination import main

    out = tmp_path / "disc.json"
    assert (
        main(
            [
                "--pair",
                "orientation",
                "--delta-deg",
                "5",
                "--repeats",
                "2",
                "--arms",
                "random",
                "selected",
                "--max-trials",
                "60",
                "--pool-size",
                "120",
                "--size-px",
                "16",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["engine_mode"] == "in-process"
    arms = res["results"]["orientation5deg"]["arms"]
    assert arms["selected"]["median_presentations"] < arms["random"]["median_presentations"]
    assert all(run["engine_mode"] == "in-process" for a in arms.values() for run in a["runs"])
    # How often the wrong hypothesis got there first, as a rate over the repeats with intervals around it.
    for a in arms.values():
        w = a["wrong_rate"]
        assert w["runs"] == 2 and w["count"] == sum(r["wrong"] for r in a["runs"])
        assert w["ci95_clopper_pearson"][0] <= w["rate"] <= w["ci95_clopper_pearson"][1]
        assert w["ci95_clopper_pearson"][1] > 0.5  # 2 runs cannot rule much out
    # A neuron that is neither hypothesis: no run can be right, and the JSON says what the posterior did.
    neither = res["results"]["orientation5deg"]["neither"]
    for arm, n in neither.items():
        assert len(n["runs"]) == 2
        assert all(r["posterior_true"] is None and not r["wrong"] for r in n["runs"])
        reached = [r for r in n["runs"] if r["reached"]]
        assert n["false_certainty"]["count"] == len(reached) and n["never_reached"] == 2 - len(reached)
        assert sum(n["winners"].values()) == len(reached)
        assert all(r["presentations"] <= 60 * 5 for r in reached)
        assert all(abs(sum(r["final_posterior"]) - 1) < 1e-9 for r in n["runs"])


def test_mei_benchmark_fits_its_model_through_the_engine(tmp_path):
    from bench.mei import main

    out = tmp_path / "mei.json"
    assert (
        main(
            [
                "--presentations",
                "50",
                "--train-steps",
                "20",
                "--steps",
                "5",
                "--neurons",
                "3",
                "--pool-size",
                "300",  # the default test set holds 200: a pool may not be smaller
                "--size-px",
                "16",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    res = json.loads(out.read_text())
    assert res["engine_mode"] == "in-process" and res["summary"]["training_steps"] > 0
    assert len(res["per_neuron"]["mei_hz"]) == 3 and 0.0 <= res["summary"]["share_mei_beats_best_natural"] <= 1.0
    assert len(res["per_neuron"]["oracle_mei_hz"]) == 3  # the same synthesis on the ground truth, for reference
    # Observed (the true rate) over the rate the model predicted for each MEI.
    ratio, true, pred = (res["per_neuron"][k] for k in ("observed_over_predicted", "mei_hz", "mei_predicted_hz"))
    assert all(r is None or abs(r - t / p) < 1e-6 * max(1.0, r) for r, t, p in zip(ratio, true, pred))
    assert "median_observed_over_predicted" in res["summary"]
    # The rig's start (rigs/sim.toml: the shown image each neuron answered most strongly), for model and oracle.
    assert res["summary"]["method"]["start"] == "recorded"


def test_the_neither_truth_is_neither_hypothesis_but_between_them():
    import numpy as np
    import torch

    from bench.discrimination import MeanOf, TrueNeuron, make_pair

    natural = np.random.default_rng(0).integers(0, 256, (200, 16, 16, 3), dtype=np.uint8)
    fns = make_pair("dot", 16, natural, np.random.default_rng(1))
    a, b = (TrueNeuron(u).rates(natural)[:, 0] for u in fns.values())
    mid = TrueNeuron(MeanOf(fns.values())).rates(natural)[:, 0]
    np.testing.assert_allclose(mid, (a + b) / 2, rtol=1e-5)
    assert np.abs(mid - a).max() > 1.0 and np.abs(mid - b).max() > 1.0  # differs from each hypothesis
    assert isinstance(MeanOf(fns.values())(torch.zeros(2, 3, 16, 16)), torch.Tensor)
