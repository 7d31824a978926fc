"""A full disk stops the session cleanly: the status stored where the store still takes it, a summary where there is
room, the message that says what to do; the report and the NWB export fail with a message and leave no file.

The disk is a real one: a 3 MB tmpfs (mounting needs root; the tests skip, saying so, where mount is refused)."""

from __future__ import annotations

import errno
import io
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from controller.cli import main as cli_main
from controller.config import with_overrides
from records.space import fallback_summary_path, summary_path
from tests.helpers import small_rig


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB filesystem (tmpfs) at tmp_path/disk, unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(directory: Path) -> None:
    """Take what space is left."""
    with open(directory / "filler", "ab") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC


def _rig(**session):
    return with_overrides(
        small_rig(n_trials=10000, **session),
        images={"size_px": 96},
        model={"kind": "baseline"},
        selection={"mix": {"random": 1.0}},
        fixation={"break_probability": 0.0},
    )


def _stored_status(session: Path) -> str | None:
    con = sqlite3.connect(session / "session.sqlite")
    try:
        row = con.execute("SELECT value FROM meta WHERE key = 'status'").fetchone()
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return row and row[0]
    finally:
        con.close()


def test_a_write_error_on_a_full_disk_ends_the_session_with_what_to_do_and_report_and_nwb_leave_no_file(small_disk):
    # The engine's own session (the launcher's terminal on a full disk is checked by `bench faults`' disk-full
    # test): no floor, so the write that fails is what ends it.
    from controller.session import run_controller
    from controller.worlds import in_process_parts

    rig = _rig(min_free_mb=0.0)
    session = small_disk / "s"
    (small_disk / "other").write_bytes(b"\0" * 1_500_000)  # another program's file: fewer trials to fill the rest
    summary = run_controller(rig, session, in_process_parts(rig), quiet=True)
    message = f"disk full at {session.resolve()}: free space or move the session directory, then "
    assert summary["status"] == message + f"`cortexloop run --resume {session.resolve()}`", summary["status"]
    assert summary["trials_done"] > 0
    written = summary_path(session)
    assert written is not None
    assert json.loads(written.read_text())["status"] == summary["status"]
    status = _stored_status(session)  # what was committed is whole; the status is there where it fitted
    assert status is None or status.startswith(("disk full at ", "running"))
    fallback_summary_path(session).unlink(missing_ok=True)

    _fill(session)
    assert cli_main(["report", str(session)]) == 1
    assert cli_main(["export-nwb", str(session)]) == 1
    left = sorted(p.name for p in session.iterdir())
    assert "report.html" not in left and "session.nwb" not in left, left
    assert not [name for name in left if ".tmp" in name], left


def test_below_the_rig_minimum_the_session_warns_then_ends_cleanly_with_its_status_stored(small_disk):
    from controller.session import run_controller
    from controller.status import StatusBoard
    from controller.worlds import in_process_parts
    from records.store import SessionStore

    rig = _rig(min_free_mb=2.0)
    session = small_disk / "s"
    stream = io.StringIO()
    board = StatusBoard(rig.session.n_trials, None, stream=stream)
    summary = run_controller(rig, session, in_process_parts(rig), board=board, quiet=True)
    assert summary["status"] == (
        f"disk full at {session.resolve()}: free space or move the session directory, then "
        f"`cortexloop run --resume {session.resolve()}`"
    )
    lines = stream.getvalue().splitlines()
    assert any("WARNING: free space at" in x and "session.min_free_mb" in x for x in lines), lines
    # Where the store's last checkpoint took the rest of this small disk, the summary went where there was room.
    assert summary_path(session) is not None
    fallback_summary_path(session).unlink(missing_ok=True)
    assert _stored_status(session) == summary["status"]
    store = SessionStore.open(session)
    try:
        assert [e for e in store.log_entries("disk")], "the warning is in the store"
    finally:
        store.close()


def test_a_session_does_not_start_without_the_room_it_needs(small_disk):
    from transport.launch import SessionFailed, run_session

    with pytest.raises(SessionFailed, match=r"not enough free space at .*MB free.*session\.min_free_mb"):
        run_session(_rig(min_free_mb=50.0), small_disk / "s")
    assert not (small_disk / "s").exists()
