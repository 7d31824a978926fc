"""Sessions that read the Open Ephys Event Broadcaster stream (the virtual cortex publishing only that), end to end."""

import json
import os
import sqlite3
import subprocess
import time

import pytest

from contract import messages as m
from controller.config import with_overrides
from controller.engine import SessionEngine
from controller.session import run_controller, run_in_process
from controller.worlds import process_parts
from tests.helpers import OPENEPHYS_NEURONS, ROOT, made_once, openephys_rig, serve, small_rig, stored_responses
from transport.launch import prepare_session_dir, run_session, session_roles


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """(rig, directory, native summary, Open Ephys summary): one rig recorded through the native stream (in this
    process) and through the Open Ephys stream (the processes of cortexloop run), read by the tests below."""
    # A photodiode on line 8 and a display lag of 8-10 ms: the neurons see each image then, and both sessions
    # take the photodiode edges as the onsets.
    rig = with_overrides(
        small_rig(n_trials=4),
        model={"form": "stacked", "steps_per_trial": 5},
        fixation={"break_probability": 0.15},
        cortex={
            "ttl": {"photodiode_line": 8},
            "recording": {
                **small_rig().cortex.recording.model_dump(),
                "photodiode_lag_ms": 8.0,
                "photodiode_jitter_ms": 2.0,
            },
        },
    )
    oe_rig = openephys_rig(rig)
    assert session_roles(oe_rig) == ("cortex", "model", "presenter", "controller")

    def make(where):
        # The native stream's session in this process: it records what the same rig does across processes
        # (tests/controller/test_engine.py). The other source needs the virtual cortex process that publishes it.
        native, _ = run_in_process(rig, where / "native")
        return {"native": native, "openephys": run_session(oe_rig, where / "openephys")}

    where, made = made_once(tmp_path_factory, "openephys-sessions", make)  # once, whichever worker asks first
    return rig, where, made["native"], made["openephys"]


def test_open_ephys_session_records_the_same_responses_as_the_native_stream(sessions):
    rig, tmp_path, native, oe = sessions
    assert native["status"] == oe["status"] == "completed"
    assert oe["neurons"] == OPENEPHYS_NEURONS and oe["spikes_received"] == native["spikes_received"] > 0
    assert oe["trials_aborted"] == native["trials_aborted"] > 0  # aborted trials' codes are on the lines too
    a, b = stored_responses(tmp_path / "native"), stored_responses(tmp_path / "openephys")
    assert len(a) == native["trials_done"] * rig.trial.images_per_trial > 0
    # Same spikes at the same sample times, onsets rebuilt from the TTL words and paired with the flips in
    # order: every response, window and count is the same.
    assert a == b
    # The truth of the virtual cortex behind the Open Ephys stream still scores the model.
    assert oe["heldout_r_per_neuron"] == native["heldout_r_per_neuron"] and len(oe["heldout_r_per_neuron"]) == 8
    db = sqlite3.connect(tmp_path / "openephys" / "session.sqlite")
    codes = db.execute("SELECT code, trial_id FROM event_codes WHERE clock = 'acquisition'").fetchall()
    n_onsets = db.execute("SELECT COUNT(*) FROM onsets").fetchone()[0]
    assert sum(c == m.Codes.IMAGE_ONSET for c, _ in codes) == n_onsets == oe["images_shown"]
    assert {t for _, t in codes} == {-1}  # TTL words carry no trial numbers
    assert oe["malformed_messages_dropped"] == 0
    # Every onset has its photodiode edge, 8-10 ms after its code, on both streams alike.
    assert sum(c == m.Codes.PHOTODIODE for c, _ in codes) == n_onsets
    for s in (native, oe):
        pd = s["photodiode"]
        assert pd["onsets_without_edge"] == 0 and pd["onsets_with_edge"] == len(a)
        assert 8.0 <= pd["latency_ms_median"] <= pd["latency_ms_p99"] < 10.0
    assert native["photodiode"] == oe["photodiode"]


def test_a_stream_that_stops_ends_the_session_cleanly_with_a_summary(tmp_path, monkeypatch):
    # The controller's silence limit (10 s) lowered, so the test waits less for it: the controller runs in this
    # process, the cortex, model worker and presenter in their own, started as cortexloop run starts them.
    monkeypatch.setattr(SessionEngine, "DEAD_AFTER_S", 2.0)
    # Real time: on a virtual clock time moves only with the stream, so silence there is not a stopped stream.
    rig = small_rig(n_trials=200, speed="realtime")
    rig = with_overrides(
        rig,
        rehearsal={"stop_after_s": 8.0},
        model={"kind": "baseline"},
    )
    rig = openephys_rig(rig, stale_after_s=0.5)
    session_dir = tmp_path / "stops"
    endpoints = prepare_session_dir(rig, session_dir)
    procs = [serve(role, session_dir, parent_pid=os.getpid(), log=True) for role in ("cortex", "model", "presenter")]
    t0 = time.monotonic()
    try:
        summary = run_controller(rig, session_dir, process_parts(rig, endpoints), quiet=True)
    finally:
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    took = time.monotonic() - t0
    assert summary["status"].startswith("aborted: acquisition silent")
    # On a busy machine the processes may start after the stream has stopped: no trial done is still a clean end.
    assert 0 <= summary["trials_done"] < 200
    assert json.loads((session_dir / "summary.json").read_text()) == summary
    db = sqlite3.connect(session_dir / "session.sqlite")
    assert db.execute("SELECT value FROM meta WHERE key='status'").fetchone()[0] == summary["status"]
    # Stopped after 8 s of recording; the end comes once the silence outlasts the controller's limit (2 s here).
    assert took < 90


def test_the_example_live_rig_reads_open_ephys_and_starts_no_virtual_cortex():
    from acquisition.openephys_source import OpenEphysSource
    from controller.config import load_rig
    from controller.session import rig_truth
    from controller.worlds import acquisition_part

    rig = load_rig(ROOT / "rigs" / "openephys.toml")
    assert rig.cortex.source == "openephys" and not rig.cortex.has_virtual_cortex
    assert session_roles(rig) == ("model", "presenter", "controller")
    assert rig_truth(rig) is None  # no ground truth on a live rig
    units = rig.cortex.openephys.unit_map()
    # sorted_id as the Spike Sorter numbers units: one counter over all electrodes.
    assert units[("Tetrode 3", 5)] == 4 and units[("Electrode 5", 7)] == 6 and len(units) == 8
    assert sorted(u for _, u in units) == list(range(1, 9))
    src = acquisition_part(rig, {"openephys_pub": "ipc:///nonexistent"})  # connects to the rig file's endpoint
    try:
        assert isinstance(src, OpenEphysSource) and src.endpoint == "tcp://192.168.1.20:5557"
        assert src.control is None  # a live recording system is never told to stop
    finally:
        src.close()


def test_an_open_ephys_session_exports_its_trials_and_onsets_to_nwb(sessions, tmp_path):
    """TTL words carry no trial numbers: the export pairs them with the stored trials and onsets, in order."""
    from pynwb import NWBHDF5IO

    from records.nwb import export_nwb

    rig, where, _, summary = sessions
    result = export_nwb(where / "openephys", tmp_path / "oe.nwb")
    with NWBHDF5IO(str(tmp_path / "oe.nwb"), "r") as io:
        f = io.read()
        assert len(f.units) == OPENEPHYS_NEURONS
        # On a virtual clock the session's very last code (the last trial's end) has no later sample behind it
        # and is never rebuilt from the lines (README, "Rehearsing with the simulated rig"): every other trial is.
        assert len(f.trials) == summary["trials_done"] + summary["trials_aborted"] - 1
        assert sorted(f.trials["trial_id"][:]) == list(range(len(f.trials)))
        onsets = f.stimulus["image_onsets"]
        # Every onset code the recording system delivered is paired with its flip (the session ends once its
        # last trial is binned, so codes of trials shown after it may never have been delivered).
        db = sqlite3.connect(where / "openephys" / "session.sqlite")
        recorded = db.execute("SELECT COUNT(*) FROM event_codes WHERE clock='acquisition' AND code=20").fetchone()[0]
        assert len(onsets.timestamps) == recorded >= summary["trials_done"] * rig.trial.images_per_trial
    assert result["units"] == OPENEPHYS_NEURONS
