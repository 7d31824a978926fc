"""Disk space for a session's records: how much a session needs, whether a write failed for lack of it, and writing
files so that a full disk leaves the old file or none, never a truncated one.

A session's store grows with every trial; a full disk makes SQLite raise `sqlite3.OperationalError: database or
disk is full` and a plain write raise `OSError` ENOSPC. What was committed before stays whole (SQLite rolls the
failed transaction back); the session then ends with DISK_FULL's message, the status stored where the store still
takes it, and the summary written where there is room (summary_path).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

from controller.config import RigConfig

MB = 1_000_000
# Below this share of session.min_free_mb a running session ends (disk full) while the store can still say why.
FLOOR_SHARE = 0.25


class DiskFull(Exception):
    """A write of the session's records failed, or would, for lack of space at `path`."""

    def __init__(self, path: Path | str, session_dir: Path | str):
        self.path, self.session_dir = Path(path), Path(session_dir)
        super().__init__(disk_full_message(self.path, self.session_dir))


def disk_full_message(path: Path | str, session_dir: Path | str) -> str:
    return (
        f"disk full at {path}: free space or move the session directory, then "
        f"`cortexloop run --resume {Path(session_dir).resolve()}`"
    )


def is_disk_full(err: BaseException) -> bool:
    """Whether `err` is a write refused for lack of space (SQLite's SQLITE_FULL, or ENOSPC / EDQUOT)."""
    if isinstance(err, sqlite3.OperationalError):
        return "database or disk is full" in str(err) or getattr(err, "sqlite_errorcode", None) == 13
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def free_mb(path: Path | str) -> float:
    """Free space (MB) on the filesystem that holds `path` (or its nearest existing parent)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / MB


def expected_store_mb(rig: RigConfig) -> float:
    """What a session of `rig` is expected to write (MB): per trial its images (uint8 pixels), their responses,
    the spikes of the trial's span (at 50 spikes/s per neuron, a time and a unit each) and the rows around them,
    plus the model worker's checkpoints (kept twice while one is replaced). An estimate for sizing, not a bound."""
    t = rig.timing
    h, w, c = rig.images.shape
    c_ = rig.cortex
    neurons = {
        "virtual": c_.population.n_neurons + len(c_.population.custom),
        "openephys": len(c_.openephys.units) if c_.openephys else 0,
        "lsl": c_.lsl.n_neurons if c_.lsl else 0,
    }[c_.source]
    per_image = h * w * c + 4 * neurons + 400
    spikes = neurons * 50.0 * t.trial_s * 10
    per_trial = t.images_per_trial * per_image + spikes + 2000
    checkpoints = 2 * 5 * MB if rig.model.kind != "baseline" else 2 * MB
    return (1.5 * rig.session.n_trials * per_trial + checkpoints) / MB + 5.0


def min_free_mb(rig: RigConfig) -> float:
    """The free space a session of `rig` needs at its store: session.min_free_mb, or twice its expected store."""
    given = rig.session.min_free_mb
    return float(given) if given is not None else round(2 * expected_store_mb(rig), 1)


def check_free_space(rig: RigConfig, session_dir: Path) -> str | None:
    """None where the filesystem of session_dir has min_free_mb(rig) free; else what is wrong, naming the key."""
    need, free = min_free_mb(rig), free_mb(session_dir)
    if free >= need:
        return None
    return (
        f"not enough free space at {Path(session_dir).resolve()}: {free:.1f} MB free, the session needs about "
        f"{need:.1f} MB (session.min_free_mb; unset: twice the expected store, {expected_store_mb(rig):.1f} MB). "
        f"Free space, give session.store_dir on another disk, or lower session.min_free_mb"
    )


def write_atomic(path: Path | str, data: str | bytes) -> Path:
    """Write `data` to `path` through a temporary file in the same directory, renamed into place: on any error
    (a full disk) the temporary file is removed and `path` is left as it was."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def fallback_summary_path(session_dir: Path | str) -> Path:
    """Where a session's summary goes when its own directory has no room: the system's temporary directory, under
    a name of its own (the directory's name and a hash of its full path)."""
    path = Path(session_dir).resolve()
    tag = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"cortexloop-{path.name}-{tag}-summary.json"


def summary_path(session_dir: Path | str) -> Path | None:
    """The summary of the session in session_dir: its summary.json, or the one written elsewhere for lack of
    room (fallback_summary_path), or None."""
    for path in (Path(session_dir) / "summary.json", fallback_summary_path(session_dir)):
        if path.exists():
            return path
    return None


def write_summary_with_room(session_dir: Path | str, summary: dict) -> Path | None:
    """summary.json in the session directory; where that disk is full, fallback_summary_path; where that fails
    too, the summary printed to stderr (None returned). A stale fallback file of the same session is removed."""
    text = json.dumps(summary, indent=2, default=float)
    fallback = fallback_summary_path(session_dir)
    for path in (Path(session_dir) / "summary.json", fallback):
        try:
            write_atomic(path, text)
        except OSError:
            continue
        if path != fallback:
            fallback.unlink(missing_ok=True)
        else:
            print(f"cortexloop: no room in {session_dir}: summary written to {path}", file=sys.stderr, flush=True)
        return path
    print(f"cortexloop: no room for the summary anywhere; it follows\n{text}", file=sys.stderr, flush=True)
    return None
