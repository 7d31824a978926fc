"""A session whose controller is killed mid-trial goes on with `cortexloop run --resume`, losing and repeating nothing."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np

from controller.config import with_overrides
from tests.helpers import child_pid, cli_env, running, small_rig, start_launcher, wait_for_trials


def test_a_killed_controller_resumes_and_nothing_committed_is_lost_or_repeated(tmp_path):
    rig = with_overrides(
        small_rig(n_trials=10, speed="realtime"),
        model={"kind": "baseline"},
        # max_frame_error: frames a busy machine drops are not what this test is about (not shown again).
        trial={"iti_ms": 100, "fixation_ms": 100, "max_frame_error": 10_000},
    )
    session = tmp_path / "s"
    launcher = start_launcher(rig, tmp_path, session="s")
    db_path = session / "session.sqlite"
    try:
        wait_for_trials(db_path, 3, "WHERE status='done'")  # a few trials in, and one being shown now
        others = [child_pid(launcher.pid, role) for role in ("cortex", "model", "presenter")]
        os.kill(child_pid(launcher.pid, "controller"), signal.SIGKILL)
        killed_at = time.monotonic()
        while any(running(pid) for pid in others) and time.monotonic() - killed_at < 30:
            time.sleep(0.1)
        stopped_after_s = time.monotonic() - killed_at
        out, _ = launcher.communicate(timeout=180)  # it ends the session and writes its summary: slower when busy
    finally:
        if launcher.poll() is None:
            launcher.kill()
    killed = json.loads((session / "summary.json").read_text())
    assert "controller stopped (signal SIGKILL)" in killed["status"], out
    # Nobody else tells them the session is over: the launcher stops them at once, not after its 10 s grace
    # (the bound leaves a busy machine time to end three processes).
    assert stopped_after_s < 8.0, (stopped_after_s, out[-2000:])
    db = sqlite3.connect(db_path)
    before = {
        table: db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
        for table in ("plans", "onsets", "spike_batches", "responses", "event_codes")
    }
    db.close()
    unfinished = [
        t
        for (t,) in sqlite3.connect(db_path).execute(
            "SELECT trial_id FROM plans WHERE trial_id NOT IN (SELECT trial_id FROM trials)"
        )
    ]
    assert unfinished, "the controller was killed between trials; the test wants a trial in flight"

    resumed = subprocess.run(
        [sys.executable, "-m", "controller.cli", "run", "--resume", str(session)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = json.loads((session / "summary.json").read_text())
    assert resumed.returncode == 0 and summary["status"] == "completed", resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert summary["resumed"] == 1 and summary["trials_done"] == rig.session.n_trials
    db = sqlite3.connect(db_path)
    # Nothing committed before the kill was changed or lost.
    for table, rows in before.items():
        after = db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()
        assert after[: len(rows)] == rows or (table == "responses" and set(rows) <= set(after)), table
    # The interrupted trials are recorded as aborted, and their images came first in a later plan.
    for tid in unfinished:
        status, reason = db.execute("SELECT status, reason FROM trials WHERE trial_id=?", (tid,)).fetchone()
        assert status == "aborted" and reason.startswith("interrupted")
        hashes = json.loads(db.execute("SELECT image_hashes FROM plans WHERE trial_id=?", (tid,)).fetchone()[0])
        later = [
            (json.loads(h), json.loads(r))
            for h, r in db.execute(
                "SELECT image_hashes, reasons FROM plans WHERE trial_id > ? ORDER BY trial_id", (tid,)
            )
        ]
        again = {h for hs, rs in later for h, r in zip(hs, rs) if r.startswith(f"requeued from trial {tid}:")}
        assert set(hashes) <= again
    # Every done trial has exactly its images' responses; none is repeated (one row per trial and image).
    n_img = rig.trial.images_per_trial
    done = [t for (t,) in db.execute("SELECT trial_id FROM trials WHERE status='done'")]
    for tid in done:
        assert db.execute("SELECT COUNT(*) FROM responses WHERE trial_id=?", (tid,)).fetchone()[0] == n_img
    assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == len(done) * n_img
    # The resumed recording is a stream of its own, its batches numbered afresh; none overwrote the first.
    streams = {s for (s,) in db.execute("SELECT DISTINCT stream FROM spike_batches")}
    assert streams == {"virtual-cortex", "virtual-cortex-1"}
    total = sum(len(np.frombuffer(b, np.uint16)) for (b,) in db.execute("SELECT neuron FROM spike_batches"))
    assert total >= sum(len(np.frombuffer(r[5], np.uint16)) for r in before["spike_batches"])
