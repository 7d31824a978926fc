"""The session store: what passed validation always stores; what was committed survives a kill; a trial's
end is fsynced to the disk."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from contract import messages as m
from records.store import DB_NAME, SessionStore
from tests.helpers import FUZZ, FUZZ_SCALE, ROOT, valid_messages


def put(store: SessionStore, msg) -> None:
    """Store a decoded message the way the controller does."""
    if isinstance(msg, m.SpikeBatch):
        store.put_spikes(msg)
        store.log("spikes_lost", f"stream {msg.stream}: batch {msg.seq}")
    elif isinstance(msg, m.EventCode):
        store.put_event(msg)
    elif isinstance(msg, m.OnsetReport):
        store.put_onset(msg)
    elif isinstance(msg, m.TrialReport):
        store.put_trial(msg)
    elif isinstance(msg, m.TrialPlan):
        store.put_plan(msg)
    elif isinstance(msg, m.ModelReply):
        store.put_model_version(msg.model_version, msg.trial_id, msg.info)
    elif isinstance(msg, m.ScreenImage):
        store.put_image(msg.image_hash, msg.pixels)
    elif isinstance(msg, m.ResponsesUpdate):
        for h, px in zip(msg.image_hashes, msg.pixels):
            store.put_image(h, px)
        store.conn.commit()
    elif isinstance(msg, m.Heartbeat):
        store.set_meta(f"heartbeat:{msg.role}", repr(msg.info))
    elif isinstance(msg, m.Shutdown):
        store.log("shutdown", msg.reason)


@pytest.fixture(scope="module")
def store():
    d = Path(tempfile.mkdtemp(prefix="cortexloop-store-"))
    s = SessionStore.create(d / "s", "{}")
    yield s
    s.close()
    shutil.rmtree(d)


@settings(
    FUZZ,
    max_examples=int(200 * FUZZ_SCALE),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(msg=valid_messages())
def test_whatever_passes_validation_stores_without_error(store, msg):
    decoded = m.decode([bytes(f) for f in m.encode(msg)])
    if isinstance(decoded, m.SpikeBatch):
        store.conn.execute("DELETE FROM spike_batches WHERE stream = ? AND seq = ?", (decoded.stream, decoded.seq))
    put(store, decoded)
    if isinstance(decoded, m.SpikeBatch):
        row = store.conn.execute(
            "SELECT t_start_s, total_spikes, time_s FROM spike_batches WHERE stream = ? AND seq = ?",
            (decoded.stream, decoded.seq),
        ).fetchone()
        assert row[0] == decoded.t_start_s and row[1] == decoded.total_spikes
        assert np.array_equal(np.frombuffer(row[2], np.float64), decoded.time_s)
    elif isinstance(decoded, m.TrialPlan):
        for h, px in zip(decoded.image_hashes, decoded.pixels):
            assert np.array_equal(store.image(h), px)


def test_a_repeated_batch_is_stored_once_and_reported(tmp_path):
    s = SessionStore.create(tmp_path / "s", "{}")
    batch = m.SpikeBatch(
        stream="s",
        seq=3,
        t_start_s=0.0,
        t_end_s=0.02,
        total_spikes=1,
        neuron=np.array([2], np.uint16),
        time_s=np.array([0.01]),
    )
    assert s.put_spikes(batch) is True
    assert s.put_spikes(batch) is False  # the caller must not bin it again
    assert s.count("spike_batches") == 1
    s.close()


def test_a_failed_trial_write_leaves_nothing_half_done(tmp_path):
    s = SessionStore.create(tmp_path / "s", "{}")
    bad = m.TrialReport(trial_id=-1, status="gap", start_s=float("nan"), end_s=1.0, dropped_frames=0, n_onsets=0)
    with pytest.raises(sqlite3.IntegrityError):  # NaN is NULL to SQLite; decode never lets this through
        s.put_trial(bad)
    assert not s.conn.in_transaction
    assert s.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # back to NORMAL
    s.put_trial(m.TrialReport(trial_id=0, status="done", start_s=0.0, end_s=1.0, dropped_frames=0, n_onsets=0))
    assert s.count("trials") == 1 and s.count("gaps") == 0
    s.close()


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from contract import messages as m
    from records.store import SessionStore
    store = SessionStore.create(sys.argv[1], "{}")
    for i in range(1_000_000):
        store.put_spikes(m.SpikeBatch(stream="s", seq=i, t_start_s=i * 0.02, t_end_s=(i + 1) * 0.02, total_spikes=i,
                                      neuron=np.zeros(0, np.uint16), time_s=np.zeros(0)))
        if i % 10 == 9:
            store.put_trial(m.TrialReport(trial_id=i // 10, status="done", start_s=0.0, end_s=1.0,
                                          dropped_frames=0, n_onsets=0))
        print(i, flush=True)  # batch i (and trial i // 10 if i % 10 == 9) is committed
""")


def test_a_killed_writer_loses_no_committed_row(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path / "s")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        acknowledged = -1
        for line in proc.stdout:
            acknowledged = int(line)
            if acknowledged >= 400:
                break
        proc.send_signal(signal.SIGKILL)  # mid-write: the writer is still going
        proc.wait(10)
    finally:
        proc.kill()
    assert acknowledged >= 400
    db = sqlite3.connect(tmp_path / "s" / DB_NAME)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    seqs = [r[0] for r in db.execute("SELECT seq FROM spike_batches ORDER BY seq")]
    assert seqs[: acknowledged + 1] == list(range(acknowledged + 1))  # every acknowledged batch, in order
    trials = db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
    assert trials >= (acknowledged + 1) // 10


FSYNC_PROBE = textwrap.dedent("""
    import os, sys
    import numpy as np
    from contract import messages as m
    from records.store import SessionStore
    store = SessionStore.create(sys.argv[1], "{}")
    os.write(2, b"MARK spikes\\n")
    for i in range(20):
        store.put_spikes(m.SpikeBatch(stream="s", seq=i, t_start_s=0.0, t_end_s=1.0, total_spikes=0))
        store.put_event(m.EventCode(stream="p", seq=i, code=20, time_s=1.0, clock="presenter"))
    os.write(2, b"MARK trial\\n")
    store.put_trial(m.TrialReport(trial_id=0, status="done", start_s=0.0, end_s=1.0, dropped_frames=0, n_onsets=0))
    os.write(2, b"MARK end\\n")
    os._exit(0)  # no close: nothing synced after the trial
""")


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed (apt-get install strace)")
def test_a_trial_end_is_fsynced_and_spike_batches_are_not(tmp_path):
    """Power-loss safety of a committed trial: its commit waits for the WAL to reach the disk, which also carries
    every earlier commit. Observed as system calls, since a power cut cannot be staged here."""
    trace = tmp_path / "trace"
    run = subprocess.run(
        [
            "strace",
            "-f",
            "-y",
            "-e",
            "trace=fsync,fdatasync,write",
            "-o",
            str(trace),
            sys.executable,
            "-c",
            FSYNC_PROBE,
            str(tmp_path / "s"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if run.returncode != 0 and "ptrace" in run.stderr:
        pytest.skip(f"strace cannot trace here: {run.stderr.strip()[:200]}")
    assert run.returncode == 0, run.stderr
    phase, syncs = None, {"spikes": [], "trial": []}
    for line in trace.read_text().splitlines():
        for name in ("spikes", "trial", "end"):
            if f"MARK {name}" in line:
                phase = name
        if phase in syncs and ("fsync(" in line or "fdatasync(" in line):
            syncs[phase].append(line)
    assert syncs["spikes"] == []  # 40 commits, none waiting for the disk
    assert any(f"{DB_NAME}-wal>" in s for s in syncs["trial"]), syncs["trial"]


def test_store_connection_settings(tmp_path):
    s = SessionStore.create(tmp_path / "s", "{}")
    assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL between trial ends
    s.close()
