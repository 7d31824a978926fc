"""Every stop says what stopped and what to do: a killed acquisition process is named at the terminal and in the
trials it interrupted, with the command that resumes the session, and leaves no process behind; a taken endpoint is named with what to use
instead."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import zmq

from controller.config import load_rig, with_overrides
from records.resume import INTERRUPTED, resume_point
from records.store import SessionStore
from tests.helpers import ROOT, child_pid, children_of, start_launcher, wait_for_trials
from transport.links import EndpointInUse, bind


def test_a_taken_endpoint_is_named_with_auto_or_another_port_suggested():
    ctx = zmq.Context()
    first, second = ctx.socket(zmq.PULL), ctx.socket(zmq.PULL)
    try:
        port = first.bind_to_random_port("tcp://127.0.0.1")
        endpoint = f"tcp://127.0.0.1:{port}"
        with pytest.raises(EndpointInUse) as err:
            bind(second, "model", endpoint, None)
        text = str(err.value)
        assert f"endpoints.model = '{endpoint}'" in text and "already in use" in text
        assert '"auto"' in text and "another port" in text
    finally:
        first.close(0)
        second.close(0)
        ctx.term()


def test_a_killed_acquisition_process_ends_the_session_cleanly_named_everywhere_without_orphans(tmp_path):
    """One session, the acquisition process killed mid-session: the terminal, summary.json, the store and the
    controller's log all name it; the resume command is shown; no process is left behind; resuming labels the
    trials it interrupted with what stopped them."""
    rig = with_overrides(
        load_rig(ROOT / "rigs" / "sim.toml"),
        session={"n_trials": 10000, "speed": "realtime"},
        display={"presenter": "headless"},
        images={"pool_size": 300, "test_size": 40},
        cortex={"population": {"n_neurons": 6}},
        model={"kind": "baseline"},
    )
    launcher = start_launcher(rig, tmp_path)
    try:
        wait_for_trials(tmp_path / "k" / "session.sqlite", 1)
        children = children_of(launcher.pid)
        assert len(children) == 4
        os.kill(child_pid(launcher.pid, "cortex"), signal.SIGKILL)
        out, _ = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    session = tmp_path / "k"
    assert launcher.returncode == 1
    # The terminal, not only summary.json, shows why the session ended and how to go on.
    assert "aborted: the cortex process died (exit code -9)" in out, out
    assert f"cortexloop run --resume {session.resolve()}" in out, out
    assert "session ended: aborted: the cortex process died" in out, out
    assert "cortexloop session summary" in out
    summary = json.loads((session / "summary.json").read_text())
    assert summary["status"] == "aborted: the cortex process died (exit code -9)"
    assert summary["trials_done"] >= 1
    # The controller's own output is in the session's logs too: its status lines and the summary.
    assert "cortexloop session summary" in (session / "logs" / "controller.log").read_text()
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "Z" in open(f"/proc/{pid}/stat").read().split()[2]
    # Resuming labels the trials the stop interrupted with what stopped, not with the controller.
    store = SessionStore.open(session)
    try:
        assert store.meta("status") == summary["status"]
        before = {t["trial_id"] for t in store.trials()}
        resume_point(store, rig)
        interrupted = [t for t in store.trials() if t["trial_id"] not in before]
    finally:
        store.close()
    assert interrupted, "the queued trials were not in flight when the cortex died"
    for t in interrupted:
        assert t["reason"] != INTERRUPTED
        assert t["reason"] == "interrupted: the cortex process died (exit code -9), during this trial", t
