"""Rig values checked against each other: `cortexloop check` refuses combinations that cannot run as written,
naming the key and the reason; shipped rigs and stored sessions still load; a session the abort cap ends short
says so in its status."""

from __future__ import annotations

import json

import pytest

from controller.cli import main as cli_main
from controller.config import RigFileError, load_rig, parse_rig, with_overrides
from tests.helpers import ROOT, small_rig

KEYS = {
    "server_key": "/keys/rig-server.key_secret",
    "client_key": "/keys/this-machine.key_secret",
    "authorized_keys": "/keys/authorized",
}

# (what is changed in rigs/sim.toml, the key the refusal names, words of its reason)
ABSURD = [
    ({"response": {"window_end_ms": 10000}}, "response.window_end_ms", "next image's window"),
    ({"trial": {"on_ms": 1}}, "trial.on_ms", r"at least one frame.*16\.667 ms \(1 frame\)"),
    ({"trial": {"off_ms": 0}}, "trial.off_ms", r"spikes are counted for two images.*to at least 50 ms"),
    ({"trial": {"on_ms": 110}}, "trial.on_ms", r"not a whole number of frames.*100\.000 ms.*116\.667 ms"),
    ({"images": {"pool_size": 10, "test_size": 200}}, "images.pool_size", "smaller than images.test_size"),
    ({"display": {"image_size_deg": 90}}, "image_size_deg", "runs off the screen"),
    ({"cortex": {"spiking": {"latency_ms": [150, 250]}}}, "cortex.spiking.latency_ms", "window's end"),
    ({"session": {"speed": "max"}, "model": {"steps_per_trial": 0}}, "model.steps_per_trial", "never trains"),
    ({"model": {"ensemble_size": 1}}, "model.ensemble_size", "weighs ensemble members"),
    ({"fixation": {"break_probability": 1.0}}, "fixation.break_probability", "end short of session.n_trials"),
    ({"endpoints": {"model": "tcp://*:5603"}, "security": KEYS}, "endpoints.model", "connecting process cannot"),
]


def _sim(changes: dict) -> dict:
    data = load_rig(ROOT / "rigs" / "sim.toml").model_dump()
    for section, values in changes.items():
        for key, value in values.items():
            if isinstance(value, dict):
                data[section][key].update(value)
            else:
                data[section][key] = value
    return data


@pytest.mark.parametrize("changes,key,reason", ABSURD, ids=[k for _, k, _ in ABSURD])
def test_check_refuses_values_that_make_no_sense_together_naming_the_key_and_why(
    changes, key, reason, tmp_path, capsys
):
    path = tmp_path / "rig.json"
    path.write_text(json.dumps(_sim(changes)))
    with pytest.raises(SystemExit) as stop:
        cli_main(["check", str(path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert key in err, err
    assert __import__("re").search(reason, err), err


def test_shipped_rigs_load_and_a_stored_session_keeps_values_now_refused():
    for path in sorted((ROOT / "rigs").glob("*.toml")):
        load_rig(path)
    data = _sim({"trial": {"off_ms": 0}, "fixation": {"break_probability": 1.0}})
    stored = parse_rig(data, "session.sqlite (stored rig)", stored=True)
    assert stored.trial.off_ms == 0 and stored.fixation.break_probability == 1.0


def test_a_stored_rig_with_values_now_refused_can_still_be_replayed():
    """A replay overrides the stored rig's trial count; the rules across keys stay off for a stored rig."""
    stored = parse_rig(_sim({"trial": {"off_ms": 0}}), "session.sqlite (stored rig)", stored=True)
    assert with_overrides(stored, stored=True, session={"n_trials": 3}).session.n_trials == 3
    with pytest.raises(RigFileError, match="trial.off_ms"):
        with_overrides(stored, session={"n_trials": 3})


def test_whole_frames_within_the_tolerance_are_accepted():
    # 16.7 ms at 60 Hz is one frame (0.2% off); 8.3 ms at 120 Hz too.
    for hz, on_ms in ((60, 16.7), (120, 8.3), (120, 100)):
        data = _sim({"display": {"refresh_hz": hz}, "trial": {"on_ms": on_ms, "off_ms": 150}})
        assert parse_rig(data).timing.on_frames == round(on_ms * hz / 1000)


def test_a_session_the_abort_cap_ends_short_says_so_in_its_status(tmp_path):
    from controller.session import run_controller
    from controller.worlds import in_process_parts
    from records.store import SessionStore

    rig = small_rig(n_trials=3)
    summary = run_controller(rig, tmp_path / "s", in_process_parts(rig), max_attempts=2, quiet=True)
    assert summary["trials_done"] < 3
    assert summary["status"].startswith("stopped short: "), summary["status"]
    assert "of 3 trials done after 2 attempts" in summary["status"]
    store = SessionStore.open(tmp_path / "s")
    try:
        assert store.meta("status") == summary["status"]
    finally:
        store.close()
