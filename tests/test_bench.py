"""The selection benchmarks run the product's engine (in process, virtual clock), not a copy of the loop."""
import json
import sqlite3


def test_efficiency_benchmark_runs_both_arms_through_the_engine_on_the_same_budget(tmp_path):
    from bench.efficiency import main

    out = tmp_path / "eff.json"
    assert main(["--trials", "6", "--eval-every", "3", "--neurons", "3", "--pool-size", "80", "--size-px", "16",
                 "--candidates", "40", "--test-size", "30", "--seeds", "0", "1", "--store", str(tmp_path / "s"),
                 "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["engine_mode"] == "in-process"
    for arm in ("random", "closed_loop"):
        assert len(res["arms"][arm]) == 2  # one run per paired seed
        for run in res["arms"][arm]:
            assert run["trials"] == [3, 6] and run["status"] == "completed" and run["engine_mode"] == "in-process"
    # The first two plans are asked for before any response exists (queue depth 2): random images, then the
    # closed loop's own choices. Both arms got the same training steps.
    assert res["arms"]["closed_loop"][0]["images_by_kind"] == {"random": 10, "selected": 20}
    assert res["arms"]["random"][0]["images_by_kind"] == {"random": 30}
    assert res["arms"]["random"][0]["training_steps"] == res["arms"]["closed_loop"][0]["training_steps"] > 0
    # Each arm is a stored session like any other.
    db = sqlite3.connect(tmp_path / "s" / "closed_loop-seed1" / "session.sqlite")
    assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 30
    assert db.execute("SELECT value FROM meta WHERE key='engine_mode'").fetchone()[0] == "in-process"


def test_discrimination_benchmark_runs_through_the_engine_and_designed_images_win(tmp_path):
    from bench.discrimination import main

    out = tmp_path / "disc.json"
    assert main(["--pair", "orientation", "--delta-deg", "5", "--repeats", "2", "--arms", "random", "selected",
                 "--max-trials", "60", "--pool-size", "120", "--size-px", "16", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["engine_mode"] == "in-process"
    arms = res["results"]["orientation5deg"]["arms"]
    assert arms["selected"]["median_presentations"] < arms["random"]["median_presentations"]
    assert all(run["engine_mode"] == "in-process" for a in arms.values() for run in a["runs"])


def test_mei_benchmark_fits_its_model_through_the_engine(tmp_path):
    from bench.mei import main

    out = tmp_path / "mei.json"
    assert main(["--presentations", "50", "--train-steps", "20", "--steps", "5", "--neurons", "3",
                 "--pool-size", "100", "--size-px", "16", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["engine_mode"] == "in-process" and res["summary"]["training_steps"] > 0
    assert len(res["per_neuron"]["mei_hz"]) == 3 and 0.0 <= res["summary"]["fraction_mei_beats_best_natural"] <= 1.0
