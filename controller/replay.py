"""`cortexloop replay SESSION`: a recorded session run again through the engine, from its own record.

A replay is a world like any other (contract/parts.py): the engine and the
protocol are the ones every session runs; only the parts differ.

- `StoredStream` (AcquisitionSource): the recorded spike batches and acquisition
  event codes, in the order the recording system produced them;
- `StoredPresenter` (Presenter): the recorded onsets and trial outcomes of each
  trial the engine presents;
- `StoredPlans` (Model): the recorded plan of each trial (the images the model
  chose, without those the protocol requeues itself after an aborted trial).

The engine stores what it receives in a new session directory and bins the
responses by the same rules as during the recording (windows complete only when
the stream's clock has passed them, lost spikes invalidate their windows); the
result says how many responses came out identical to the recorded ones.
"""

from __future__ import annotations

import json
from pathlib import Path

from acquisition.replay import StoredStream
from controller.clocks import VirtualClock
from controller.config import parse_rig, with_overrides
from controller.engine import SessionParts
from controller.progress import progress_bar
from controller.session import run_controller
from models.stored_plans import StoredPlans
from records.store import SessionStore
from stimulus.presenter_part import StoredPresenter


def run_replay(source_dir: Path, out_dir: Path) -> dict:
    """Replay the session in source_dir into a new session directory out_dir; return (and write to
    out_dir/replay.json) the counts of what was replayed and how many responses came out identical."""
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    src = SessionStore.open(source_dir)
    try:
        rig = parse_rig(json.loads(src.rig_json()), str(source_dir / "session.sqlite"), stored=True)
        recorded = src.responses(valid_only=False)
        n_done = src.count("trials", "WHERE status = 'done'")
        n_started = src.count("trials")
        rig = with_overrides(rig, stored=True, session={"n_trials": max(1, n_done)})
        parts = SessionParts(
            clock=VirtualClock(),
            source=StoredStream(src),
            presenter=StoredPresenter(src),
            model=StoredPlans(src),
            mode="in-process",
        )
        out = SessionStore.create(out_dir, rig.model_dump_json())
        out.set_meta("replay_of", str(source_dir.resolve()))
        with progress_bar(f"replay: {source_dir.name}", n_done) as advance:
            summary = run_controller(
                rig,
                out_dir,
                parts,
                store=out,
                truth=None,
                quiet=True,
                max_attempts=max(n_started, 1),
                after_update=lambda e, t: advance(),
            )
    finally:
        src.close()
    again = SessionStore.open(out_dir)
    try:
        rebinned = again.responses(valid_only=False)
        n_batches, n_events = again.count("spike_batches"), again.count("event_codes")
    finally:
        again.close()
    before = {
        (t, i): (c.tobytes(), v)
        for t, i, c, v in zip(recorded["trial_id"], recorded["index"], recorded["counts"], recorded["valid"])
    }
    after = {
        (t, i): (c.tobytes(), v)
        for t, i, c, v in zip(rebinned["trial_id"], rebinned["index"], rebinned["counts"], rebinned["valid"])
    }
    result = {
        "source": str(source_dir.resolve()),
        "replay_dir": str(out_dir.resolve()),
        "status": summary["status"],
        "batches": n_batches,
        "spikes": summary.get("spikes_received", 0),
        "event_codes": n_events,
        "responses_recorded": len(before),
        "responses_rebinned": len(after),
        "responses_identical": sum(after.get(k) == v for k, v in before.items()),
    }
    (out_dir / "replay.json").write_text(json.dumps(result, indent=2))
    return result
