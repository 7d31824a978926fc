"""Every process is heard from during trials too: a real-time trial longer than the controller's silence limit
does not end the session, because the presenter process heartbeats between the trial's flips."""

import os
import subprocess

from controller.config import with_overrides
from controller.engine import SessionEngine
from controller.session import run_controller
from controller.worlds import process_parts
from tests.helpers import serve, small_rig
from transport.launch import prepare_session_dir

SILENCE_LIMIT_S = 1.5


def test_a_trial_longer_than_the_silence_limit_does_not_abort_the_session(tmp_path, monkeypatch):
    # The controller's own limit, lowered so that a short test has trials more than twice as long as it.
    monkeypatch.setattr(SessionEngine, "DEAD_AFTER_S", SILENCE_LIMIT_S)
    rig = with_overrides(
        small_rig(n_trials=2, speed="realtime"),
        # max_frame_error: frames a busy machine drops are not what this test is about (not shown again).
        trial={
            "fixation_ms": 300,
            "images_per_trial": 5,
            "on_ms": 500,
            "off_ms": 200,
            "iti_ms": 200,
            "max_frame_error": 10_000,
        },
        fixation={"break_probability": 0.0},
        model={"kind": "baseline"},
    )
    limit = SILENCE_LIMIT_S + rig.timing.iti_frames / rig.timing.refresh_hz
    assert rig.timing.trial_s > 2 * limit
    session_dir = tmp_path / "long"
    endpoints = prepare_session_dir(rig, session_dir)
    procs = [serve(role, session_dir, parent_pid=os.getpid(), log=True) for role in ("cortex", "model", "presenter")]
    try:
        summary = run_controller(rig, session_dir, process_parts(rig, endpoints), quiet=True)
    finally:
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert summary["status"] == "completed", summary["status"]
    assert summary["trials_done"] == 2


def test_a_presenter_that_hangs_mid_trial_is_noticed_within_the_silence_limit(tmp_path, monkeypatch):
    """The other side of heartbeats during trials: a presenter stopped in the middle of a trial (SIGSTOP, as a
    hung process) ends the session after the silence limit, not after the trial's length."""
    import signal
    import sqlite3
    import threading
    import time

    monkeypatch.setattr(SessionEngine, "DEAD_AFTER_S", SILENCE_LIMIT_S)
    rig = with_overrides(
        small_rig(n_trials=3, speed="realtime"),
        # max_frame_error: frames a busy machine drops are not what this test is about (not shown again).
        trial={
            "fixation_ms": 300,
            "images_per_trial": 5,
            "on_ms": 500,
            "off_ms": 200,
            "iti_ms": 200,
            "max_frame_error": 10_000,
        },
        fixation={"break_probability": 0.0},
        model={"kind": "baseline"},
    )
    session_dir = tmp_path / "hung"
    endpoints = prepare_session_dir(rig, session_dir)
    procs = {
        role: serve(role, session_dir, parent_pid=os.getpid(), log=True) for role in ("cortex", "model", "presenter")
    }
    stopped_at = []

    def stop_presenter_mid_trial():
        """Once the cortex has recorded the first trial's first onset code, the presenter is mid-trial."""
        db = session_dir / "session.sqlite"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if db.exists():
                con = sqlite3.connect(db)
                try:
                    if con.execute("SELECT COUNT(*) FROM event_codes WHERE code = 20").fetchone()[0]:
                        break
                except sqlite3.OperationalError:
                    pass
                finally:
                    con.close()
            time.sleep(0.05)
        procs["presenter"].send_signal(signal.SIGSTOP)
        stopped_at.append(time.monotonic())

    stopper = threading.Thread(target=stop_presenter_mid_trial, daemon=True)
    stopper.start()
    try:
        summary = run_controller(rig, session_dir, process_parts(rig, endpoints), quiet=True)
        ended_at = time.monotonic()
    finally:
        procs["presenter"].kill()
        for p in procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert stopped_at, "the first trial never started"
    assert summary["status"].startswith("aborted: presenter silent"), summary["status"]
    # Noticed once the limit (1.7 s) had passed since the last heartbeat, before the trial (4.0 s) could have
    # ended: a limit that allowed for whole trials (it was 2 x trial + 5 s) would say 13 s here. The margin,
    # more than 2 s, is for a busy machine, where the controller's check can come late.
    limit = SILENCE_LIMIT_S + rig.timing.iti_frames / rig.timing.refresh_hz
    silent_s = float(summary["status"].split("silent for ")[1].split(" s")[0])
    assert limit <= silent_s < rig.timing.trial_s, (silent_s, limit, rig.timing.trial_s)
    assert ended_at > stopped_at[0]
