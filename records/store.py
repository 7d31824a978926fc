"""The session store: one directory per session, one SQLite database (WAL mode) in it.

Everything that happens is appended here before it is used: the rig config,
every plan, onset, event code, spike batch, response, image (content-hashed,
stored once) and model version.

Durability (docs/session-store.md):
- every put_* commits, so a killed process (SIGKILL, a crash) loses nothing it had committed;
- the commit of a trial's end (put_trial) is flushed to the disk (the WAL file is fsynced), and with it every
  commit before it, so a power loss or an OS crash loses at most what came after the last stored trial.
  The other commits (spike batches, event codes, onsets) are not fsynced one by one: the controller would
  spend a large share of its time waiting for the disk.

Whatever passed contract.messages.decode (finite times, integers within 64 bits, valid text) stores without error.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (hash TEXT PRIMARY KEY, shape TEXT NOT NULL, pixels BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS plans (
    trial_id INTEGER PRIMARY KEY, source TEXT NOT NULL, model_version INTEGER NOT NULL,
    image_hashes TEXT NOT NULL, reasons TEXT NOT NULL, timing TEXT NOT NULL, wall_s REAL NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    trial_id INTEGER PRIMARY KEY, status TEXT NOT NULL, start_s REAL, end_s REAL, n_onsets INTEGER,
    dropped_frames INTEGER, reason TEXT, frame_intervals BLOB, onset_errors BLOB, wall_s REAL NOT NULL);
CREATE TABLE IF NOT EXISTS gaps (start_s REAL NOT NULL, end_s REAL NOT NULL, wall_s REAL NOT NULL);
CREATE TABLE IF NOT EXISTS onsets (
    trial_id INTEGER NOT NULL, idx INTEGER NOT NULL, image_hash TEXT NOT NULL, flip_s REAL NOT NULL,
    frame INTEGER NOT NULL, PRIMARY KEY (trial_id, idx));
CREATE TABLE IF NOT EXISTS event_codes (
    stream TEXT NOT NULL, seq INTEGER NOT NULL, code INTEGER NOT NULL, time_s REAL NOT NULL, clock TEXT NOT NULL,
    trial_id INTEGER, idx INTEGER, image_hash TEXT);
CREATE TABLE IF NOT EXISTS spike_batches (
    stream TEXT NOT NULL, seq INTEGER NOT NULL, t_start_s REAL NOT NULL, t_end_s REAL NOT NULL,
    total_spikes INTEGER NOT NULL, neuron BLOB NOT NULL, time_s BLOB NOT NULL, PRIMARY KEY (stream, seq));
CREATE TABLE IF NOT EXISTS responses (
    trial_id INTEGER NOT NULL, idx INTEGER NOT NULL, image_hash TEXT NOT NULL, onset_acq_s REAL NOT NULL,
    window_start_s REAL NOT NULL, window_end_s REAL NOT NULL, counts BLOB NOT NULL, valid INTEGER NOT NULL,
    model_version INTEGER NOT NULL, source TEXT NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (trial_id, idx));
CREATE TABLE IF NOT EXISTS model_versions (
    version INTEGER NOT NULL, trial_id INTEGER NOT NULL, info TEXT NOT NULL, wall_s REAL NOT NULL);
CREATE TABLE IF NOT EXISTS log (wall_s REAL NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL);
"""

DB_NAME = "session.sqlite"


class StoreError(RuntimeError):
    """A store that cannot be created or opened, or lacks what was asked of it (the rig, an image); says which."""


class SessionStore:
    """One session's database: `create` a new one, `open` an existing one; put_* write, the rest read."""

    def __init__(self, path: Path, conn: sqlite3.Connection):
        self.path = path
        self.conn = conn

    @classmethod
    def create(cls, session_dir: Path, rig_json: str) -> "SessionStore":
        session_dir = Path(session_dir)
        session_dir.mkdir(parents=True, exist_ok=True)
        db = session_dir / DB_NAME
        if db.exists():
            raise StoreError(f"{db}: a session is already stored here; choose a new session directory")
        store = cls._connect(db)
        store.conn.executescript(SCHEMA)
        store._meta("rig", rig_json)
        store._meta("created_wall_s", repr(time.time()))
        store.conn.commit()
        return store

    @classmethod
    def open(cls, session_dir: Path) -> "SessionStore":
        db = Path(session_dir) / DB_NAME
        if not db.exists():
            raise StoreError(f"{session_dir}: no session database ({DB_NAME}) here")
        return cls._connect(db)

    @classmethod
    def _connect(cls, db: Path) -> "SessionStore":
        conn = sqlite3.connect(str(db), timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit is safe from a process kill at once, from a power loss once the WAL is fsynced,
        # which _durable does at each trial's end and SQLite does before every checkpoint.
        conn.execute("PRAGMA synchronous=NORMAL")
        return cls(db, conn)

    @contextmanager
    def _durable(self):
        """Statements run inside commit with the WAL fsynced (synchronous=FULL for this one commit): that
        commit and every one before it survive a power loss. (The pragma cannot change inside a transaction.)"""
        self.conn.commit()
        self.conn.execute("PRAGMA synchronous=FULL")
        try:
            yield
            self.conn.commit()
        finally:
            if self.conn.in_transaction:  # a statement failed: leave no half-written trial behind
                self.conn.rollback()
            self.conn.execute("PRAGMA synchronous=NORMAL")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.commit()
            self.conn.close()
            self.conn = None

    @property
    def closed(self) -> bool:
        return self.conn is None

    # -- writing ---------------------------------------------------------------
    def _meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def set_meta(self, key: str, value: str) -> None:
        self._meta(key, value)
        self.conn.commit()

    def put_image(self, image_hash: str, pixels: np.ndarray) -> None:
        a = np.ascontiguousarray(pixels, np.uint8)
        self.conn.execute(
            "INSERT OR IGNORE INTO images VALUES (?, ?, ?)", (image_hash, json.dumps(list(a.shape)), a.tobytes())
        )

    def put_plan(self, plan) -> None:
        for h, px in zip(plan.image_hashes, plan.pixels):
            self.put_image(h, px)
        timing = {
            "fixation_frames": plan.fixation_frames,
            "on_frames": plan.on_frames,
            "off_frames": plan.off_frames,
            "iti_frames": plan.iti_frames,
            "refresh_hz": plan.refresh_hz,
        }
        self.conn.execute(
            "INSERT OR REPLACE INTO plans VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                plan.trial_id,
                plan.source,
                plan.model_version,
                json.dumps(plan.image_hashes),
                json.dumps(plan.reasons),
                json.dumps(timing),
                time.time(),
            ),
        )
        self.conn.commit()

    def put_trial(self, report) -> None:
        """A trial's end (or a presenter gap), committed durably: see the module docstring."""
        with self._durable():
            if report.status == "gap":
                self.conn.execute("INSERT INTO gaps VALUES (?, ?, ?)", (report.start_s, report.end_s, time.time()))
            else:
                self.conn.execute(
                    "INSERT OR REPLACE INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        report.trial_id,
                        report.status,
                        report.start_s,
                        report.end_s,
                        report.n_onsets,
                        report.dropped_frames,
                        report.reason,
                        np.asarray(report.frame_intervals_s, np.float32).tobytes(),
                        np.asarray(report.onset_to_flip_error_s, np.float32).tobytes(),
                        time.time(),
                    ),
                )

    def put_onset(self, onset) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO onsets VALUES (?, ?, ?, ?, ?)",
            (onset.trial_id, onset.index, onset.image_hash, onset.flip_s, onset.frame),
        )
        self.conn.commit()

    def put_event(self, ev) -> None:
        self.conn.execute(
            "INSERT INTO event_codes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ev.stream, ev.seq, ev.code, ev.time_s, ev.clock, ev.trial_id, ev.index, ev.image_hash),
        )
        self.conn.commit()

    def put_spikes(self, batch) -> bool:
        """Stores a batch; False if a batch with its (stream, seq) was stored already (a repeat: not stored
        again, and the caller should not bin it again)."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO spike_batches VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                batch.stream,
                batch.seq,
                batch.t_start_s,
                batch.t_end_s,
                batch.total_spikes,
                np.ascontiguousarray(batch.neuron, np.uint16).tobytes(),
                np.ascontiguousarray(batch.time_s, np.float64).tobytes(),
            ),
        )
        self.conn.commit()
        return cur.rowcount == 1

    def put_responses(self, rows: list[dict]) -> None:
        """Stores responses (replacing any of the same trial and index). An onset or window that is not known (NaN:
        no event code and no clock fit) is stored as 0.0, its response invalid."""
        unknown = ("onset_acq_s", "window_start_s", "window_end_s")
        rows = [
            r
            if all(np.isfinite(r[k]) for k in unknown)
            else {**r, **{k: float(np.nan_to_num(r[k])) for k in unknown}, "valid": False}
            for r in rows
        ]
        self.conn.executemany(
            "INSERT OR REPLACE INTO responses VALUES (:trial_id, :idx, :image_hash, :onset_acq_s, :window_start_s,"
            " :window_end_s, :counts, :valid, :model_version, :source, :reason)",
            [{**r, "counts": np.asarray(r["counts"], np.float32).tobytes(), "valid": int(r["valid"])} for r in rows],
        )
        self.conn.commit()

    def put_model_version(self, version: int, trial_id: int, info: dict) -> None:
        self.conn.execute(
            "INSERT INTO model_versions VALUES (?, ?, ?, ?)", (version, trial_id, json.dumps(info), time.time())
        )
        self.conn.commit()

    def log(self, kind: str, text: str) -> None:
        self.conn.execute("INSERT INTO log VALUES (?, ?, ?)", (time.time(), kind, text))
        self.conn.commit()

    # -- reading ---------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def rig_json(self) -> str:
        value = self.meta("rig")
        if value is None:
            raise StoreError(f"{self.path}: no rig config stored")
        return value

    def image(self, image_hash: str) -> np.ndarray:
        row = self.conn.execute("SELECT shape, pixels FROM images WHERE hash = ?", (image_hash,)).fetchone()
        if row is None:
            raise StoreError(f"{self.path}: image {image_hash} not stored")
        return np.frombuffer(row[1], np.uint8).reshape(json.loads(row[0]))

    def responses(self, valid_only: bool = True) -> dict:
        """All responses in presentation order: image hashes, pixels (n,H,W,C), counts (n,N) and metadata."""
        q = (
            "SELECT trial_id, idx, image_hash, counts, valid, source, reason, model_version, window_start_s, "
            "window_end_s FROM responses" + (" WHERE valid = 1" if valid_only else "") + " ORDER BY trial_id, idx"
        )
        rows = self.conn.execute(q).fetchall()
        hashes = [r[2] for r in rows]
        pixels = np.stack([self.image(h) for h in hashes]) if rows else np.zeros((0, 0, 0, 0), np.uint8)
        counts = np.stack([np.frombuffer(r[3], np.float32) for r in rows]) if rows else np.zeros((0, 0), np.float32)
        return {
            "trial_id": np.array([r[0] for r in rows]),
            "index": np.array([r[1] for r in rows]),
            "image_hash": hashes,
            "pixels": pixels,
            "counts": counts,
            "valid": np.array([bool(r[4]) for r in rows]),
            "source": [r[5] for r in rows],
            "reason": [r[6] for r in rows],
            "model_version": np.array([r[7] for r in rows]),
            "window_s": float(rows[0][9] - rows[0][8]) if rows else 0.0,
        }

    def frame_timing(self) -> dict:
        """Frame intervals and onset-to-flip errors of all trials (seconds), and dropped frames."""
        rows = self.conn.execute("SELECT frame_intervals, onset_errors, dropped_frames FROM trials").fetchall()
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.float32)  # noqa: E731
        return {
            "frame_intervals_s": cat([np.frombuffer(r[0], np.float32) for r in rows if r[0]]),
            "onset_to_flip_error_s": cat([np.frombuffer(r[1], np.float32) for r in rows if r[1]]),
            "dropped_frames": int(sum(r[2] or 0 for r in rows)),
            "trials": len(rows),
        }

    def spike_batches(self) -> list[tuple]:
        """(stream, seq, t_start_s, t_end_s, total_spikes, neuron, time_s) in stream order."""
        out = []
        for r in self.conn.execute("SELECT * FROM spike_batches ORDER BY stream, seq"):
            out.append((r[0], r[1], r[2], r[3], r[4], np.frombuffer(r[5], np.uint16), np.frombuffer(r[6], np.float64)))
        return out

    def event_codes(self, clock: str | None = None) -> list[tuple]:
        q = "SELECT stream, seq, code, time_s, clock, trial_id, idx, image_hash FROM event_codes"
        args: tuple = ()
        if clock:
            q += " WHERE clock = ?"
            args = (clock,)
        return self.conn.execute(q + " ORDER BY rowid", args).fetchall()

    def count(self, table: str, where: str = "") -> int:
        return self.conn.execute(f"SELECT COUNT(*) FROM {table} {where}").fetchone()[0]

    # -- reading for reports and exports (read-only) ------------------------------
    def onsets(self) -> list[tuple]:
        """(trial_id, idx, image_hash, flip_s on the presenter clock, frame) of every image shown, in order."""
        return self.conn.execute(
            "SELECT trial_id, idx, image_hash, flip_s, frame FROM onsets ORDER BY trial_id, idx"
        ).fetchall()

    def plans(self) -> list[dict]:
        """Every stored plan in trial order: trial_id, source, model_version, image_hashes, reasons, wall_s."""
        rows = self.conn.execute(
            "SELECT trial_id, source, model_version, image_hashes, reasons, wall_s FROM plans ORDER BY trial_id"
        ).fetchall()
        return [
            {
                "trial_id": r[0],
                "source": r[1],
                "model_version": r[2],
                "image_hashes": json.loads(r[3]),
                "reasons": json.loads(r[4]),
                "wall_s": r[5],
            }
            for r in rows
        ]

    def trials(self) -> list[dict]:
        """Every trial report in trial order (frame intervals and onset errors in seconds)."""
        rows = self.conn.execute(
            "SELECT trial_id, status, start_s, end_s, n_onsets, dropped_frames, reason, "
            "frame_intervals, onset_errors, wall_s FROM trials ORDER BY trial_id"
        ).fetchall()
        return [
            {
                "trial_id": r[0],
                "status": r[1],
                "start_s": r[2],
                "end_s": r[3],
                "n_onsets": r[4],
                "dropped_frames": r[5],
                "reason": r[6],
                "frame_intervals_s": np.frombuffer(r[7], np.float32) if r[7] else np.zeros(0, np.float32),
                "onset_to_flip_error_s": np.frombuffer(r[8], np.float32) if r[8] else np.zeros(0, np.float32),
                "wall_s": r[9],
            }
            for r in rows
        ]

    def response_windows(self) -> list[tuple]:
        """(trial_id, idx, onset_acq_s, window_start_s, window_end_s) of every response, in presentation order."""
        return self.conn.execute(
            "SELECT trial_id, idx, onset_acq_s, window_start_s, window_end_s FROM responses ORDER BY trial_id, idx"
        ).fetchall()

    def model_versions(self) -> list[dict]:
        """Each new model version as the controller first saw it: version, trial_id, info, wall_s."""
        rows = self.conn.execute("SELECT version, trial_id, info, wall_s FROM model_versions ORDER BY rowid").fetchall()
        return [{"version": r[0], "trial_id": r[1], "info": json.loads(r[2]), "wall_s": r[3]} for r in rows]

    def log_entries(self, kind: str | None = None) -> list[tuple]:
        """(wall_s, kind, text) of the session log, oldest first; only one kind if given."""
        q, args = "SELECT wall_s, kind, text FROM log", ()
        if kind:
            q, args = q + " WHERE kind = ?", (kind,)
        return self.conn.execute(q + " ORDER BY rowid", args).fetchall()
