"""`cortexloop replay SESSION`: a recorded session run again through the engine, from its own record.

A replay is a world like any other (controller/parts.py): the engine and the
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

import numpy as np

from acquisition.replay import replay_order
from controller import messages as m
from controller.parts import InProcessPart
from controller.clocks import VirtualClock
from controller.config import parse_rig, with_overrides
from controller.engine import SessionParts
from controller.progress import progress_bar
from controller.session import run_controller
from controller.store import SessionStore

ITEMS_PER_POLL = 64  # the stream arrives a few batches at a time, as it would from a recording system


def recorded_neuron_count(store: SessionStore) -> int:
    """The stream's neuron count as recorded (older sessions: the width of the stored responses)."""
    stored = store.meta("neurons")
    if stored is not None:
        return int(stored)
    row = store.conn.execute("SELECT counts FROM responses LIMIT 1").fetchone()
    return 0 if row is None else len(np.frombuffer(row[0], np.float32))


class StoredStream(InProcessPart):
    def __init__(self, store: SessionStore):
        self.n_neurons = recorded_neuron_count(store)
        self.items = replay_order(store.spike_batches(), store.event_codes(clock="acquisition"))
        self.next = 0

    def describe(self, timeout_s: float = 0.0) -> dict:
        return {"n_neurons": self.n_neurons, "kind": "stored session"}

    def poll(self, timeout_s: float = 0.0) -> list:
        out = []
        for it in self.items[self.next:self.next + ITEMS_PER_POLL]:
            if it.kind == "spikes":
                stream, seq, t0, t1, total, neuron, times = it.record
                out.append(m.SpikeBatch(stream=stream, seq=seq, t_start_s=t0, t_end_s=t1, total_spikes=total,
                                        neuron=np.asarray(neuron), time_s=np.asarray(times)))
            else:
                stream, seq, code, t, clock, trial_id, idx, h = it.record
                out.append(m.EventCode(stream=stream, seq=seq, code=code, time_s=t, clock=clock,
                                       trial_id=trial_id, index=idx, image_hash=h or ""))
        self.next += len(out)
        return out


class StoredPresenter(InProcessPart):
    def __init__(self, store: SessionStore):
        self.trials = {t["trial_id"]: t for t in store.trials()}
        self.onsets: dict[int, list] = {}
        for tid, idx, h, flip, frame in store.onsets():
            self.onsets.setdefault(tid, []).append(m.OnsetReport(trial_id=tid, index=idx, image_hash=h, flip_s=flip,
                                                                 frame=frame))
        self.queue: list[int] = []

    def submit(self, plan: m.TrialPlan) -> None:
        self.queue.append(plan.trial_id)

    def poll(self, timeout_s: float = 0.0) -> list:
        if not self.queue:
            return []
        tid = self.queue.pop(0)
        t = self.trials.get(tid)
        if t is None:  # the recording ended before this trial was shown
            return []
        return self.onsets.get(tid, []) + [m.TrialReport(
            trial_id=tid, status=t["status"], start_s=t["start_s"], end_s=t["end_s"], n_onsets=t["n_onsets"],
            dropped_frames=t["dropped_frames"], reason=t["reason"] or "", frame_intervals_s=t["frame_intervals_s"],
            onset_to_flip_error_s=t["onset_to_flip_error_s"])]


class StoredPlans(InProcessPart):
    def __init__(self, store: SessionStore):
        self.plans = {p["trial_id"]: p for p in store.plans()}
        self.store = store
        self.outbox: list = []

    def request(self, req: m.ModelRequest) -> None:
        if req.op != "plan" or req.trial_id not in self.plans:
            self.outbox.append(m.ModelReply(request_id=req.request_id, op=req.op, model_version=-1))
            return
        p = self.plans[req.trial_id]
        chosen = [(h, r) for h, r in zip(p["image_hashes"], p["reasons"]) if not r.startswith("requeued from trial")]
        pixels = np.stack([self.store.image(h) for h, _ in chosen]) if chosen else np.zeros((0, 1, 1, 1), np.uint8)
        self.outbox.append(m.ModelReply(request_id=req.request_id, op="plan", model_version=p["model_version"],
                                        trial_id=req.trial_id, image_hashes=[h for h, _ in chosen],
                                        reasons=[r for _, r in chosen], pixels=pixels))

    def update(self, upd: m.ResponsesUpdate) -> None:
        pass

    def poll(self, timeout_s: float = 0.0) -> list:
        out, self.outbox = self.outbox, []
        return out


def run_replay(source_dir: Path, out_dir: Path) -> dict:
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    src = SessionStore.open(source_dir)
    try:
        rig = parse_rig(json.loads(src.rig_json()), str(source_dir / "session.sqlite"), stored=True)
        recorded = src.responses(valid_only=False)
        n_done = src.count("trials", "WHERE status = 'done'")
        n_started = src.count("trials")
        rig = with_overrides(rig, session={"n_trials": max(1, n_done)})
        parts = SessionParts(clock=VirtualClock(), source=StoredStream(src), presenter=StoredPresenter(src),
                             model=StoredPlans(src), mode="in-process")
        out = SessionStore.create(out_dir, rig.model_dump_json())
        out.set_meta("replay_of", str(source_dir.resolve()))
        with progress_bar(f"replay: {source_dir.name}", n_done) as advance:
            summary = run_controller(rig, out_dir, parts, store=out, truth=None, quiet=True,
                                     max_attempts=max(n_started, 1), after_update=lambda e, t: advance())
    finally:
        src.close()
    again = SessionStore.open(out_dir)
    try:
        rebinned = again.responses(valid_only=False)
        n_batches, n_events = again.count("spike_batches"), again.count("event_codes")
    finally:
        again.close()
    before = {(t, i): (c.tobytes(), v) for t, i, c, v in zip(recorded["trial_id"], recorded["index"],
                                                             recorded["counts"], recorded["valid"])}
    after = {(t, i): (c.tobytes(), v) for t, i, c, v in zip(rebinned["trial_id"], rebinned["index"],
                                                            rebinned["counts"], rebinned["valid"])}
    result = {"source": str(source_dir.resolve()), "replay_dir": str(out_dir.resolve()), "status": summary["status"],
              "batches": n_batches, "spikes": summary.get("spikes_received", 0), "event_codes": n_events,
              "responses_recorded": len(before), "responses_rebinned": len(after),
              "responses_identical": sum(after.get(k) == v for k, v in before.items())}
    (out_dir / "replay.json").write_text(json.dumps(result, indent=2))
    return result
