"""Every process is heard from during trials too: a real-time trial longer than the controller's silence limit
does not end the session, because the presenter process heartbeats between the trial's flips."""
import os
import subprocess
import sys

from controller.config import with_overrides
from controller.engine import SessionEngine
from controller.launch import prepare_session_dir
from controller.session import run_controller
from controller.worlds import process_parts
from tests.test_session import ROOT, small_rig

SILENCE_LIMIT_S = 1.0


def _serve(role: str, session_dir) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = open(session_dir / "logs" / f"{role}.log", "a")
    return subprocess.Popen([sys.executable, "-m", "controller.cli", "serve", role, "--rig",
                             str(session_dir / "rig.json"), "--session-dir", str(session_dir), "--endpoints",
                             str(session_dir / "endpoints.json"), "--parent-pid", str(os.getpid())],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def test_a_trial_longer_than_the_silence_limit_does_not_abort_the_session(tmp_path, monkeypatch):
    # The controller's own limit, lowered so that a short test has trials three times as long as it.
    monkeypatch.setattr(SessionEngine, "DEAD_AFTER_S", SILENCE_LIMIT_S)
    rig = with_overrides(small_rig(n_trials=2, speed="realtime"),
                         trial={"fixation_ms": 300, "images_per_trial": 5, "on_ms": 300, "off_ms": 200,
                                "iti_ms": 200},
                         fixation={"break_probability": 0.0}, model={"kind": "baseline"})
    limit = SILENCE_LIMIT_S + rig.timing.iti_frames / rig.timing.refresh_hz
    assert rig.timing.trial_s > 2 * limit
    session_dir = tmp_path / "long"
    endpoints = prepare_session_dir(rig, session_dir)
    procs = [_serve(role, session_dir) for role in ("cortex", "model", "presenter")]
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
