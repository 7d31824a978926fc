"""Resuming a session whose controller stopped (killed, crashed, the machine went down): from the store alone.

Everything the controller acted on was written to the store first, so where it
stood can be read back:

- a plan whose trial never reported was interrupted: it is recorded as aborted
  ("interrupted") and its images are shown again first, as after a fixation break;
- a trial that reported "done" but whose responses were not stored yet is binned
  now from the stored spikes and event codes, by the same rules as in a session
  (protocol.onset_times, response_windows, windows_valid; a window the stored
  stream had not passed is kept invalid: its late spikes were never recorded);
  if none of its responses is valid (the recording had stopped), its images are
  shown again too;
- trial ids, trials done and aborted continue from the store.

Nothing stored is changed or stored twice; the model gets back every stored
valid response (the engine sends them before the first new plan), and its
weights from the newest checkpoint in the session directory.
"""

from __future__ import annotations

import numpy as np

from acquisition.alignment import fit_clock
from acquisition.binning import SpikeRecord
from contract import messages as m
from controller import protocol as p
from controller.config import RigConfig
from records.labels import onset_code_times
from records.store import SessionStore

INTERRUPTED = "interrupted: the controller stopped during this trial"


def interrupted_reason(status: str | None) -> str:
    """The reason an interrupted trial is stored with, from the status the stopped session stored: what stopped
    ("the cortex process died (exit code -9)", "interrupted (SIGINT)", "disk full at PATH"); INTERRUPTED where
    none was stored (the controller itself was killed, or the launcher's status names it)."""
    why = (status or "").split("; resume with", 1)[0].split(": free space or move", 1)[0].strip()
    why = why.removeprefix("aborted: ").strip()
    if not why or why in ("running", "completed") or why.startswith("controller stopped"):
        return INTERRUPTED
    return f"interrupted: {why}, during this trial"


def resume_epoch(session_dir) -> int:
    """The number of the resume about to start (1 for the first): a resumed recording's stream is labelled with it,
    so that its batch numbers never meet those the store holds."""
    store = SessionStore.open(session_dir)
    try:
        return int(store.meta("resumed") or 0) + 1
    finally:
        store.close()


def resume_point(store: SessionStore, rig: RigConfig) -> p.ResumePoint:
    """Where the stored session stands, after recording its interrupted trials and binning its unbinned ones."""
    trials = {t["trial_id"]: t for t in store.trials()}
    plans = store.plans()
    onsets_by_trial: dict[int, int] = {}
    for tid, *_ in store.onsets():
        onsets_by_trial[tid] = onsets_by_trial.get(tid, 0) + 1
    requeue: list = []
    reason = interrupted_reason(store.meta("status"))
    for plan in plans:
        tid = plan["trial_id"]
        if tid in trials:
            continue
        store.put_trial(
            m.TrialReport(
                trial_id=tid,
                status="aborted",
                start_s=0.0,
                end_s=0.0,
                dropped_frames=0,
                n_onsets=onsets_by_trial.get(tid, 0),
                reason=reason,
            )
        )
        items = [(h, store.image(h), why) for h, why in zip(plan["image_hashes"], plan["reasons"])]
        requeue.extend(p.requeued(tid, items))
        store.log("resume", f"trial {tid} was {reason}: recorded as aborted, its images shown again")
    responded = {r[0] for r in store.response_windows()}
    unbinned = [tid for tid, t in sorted(trials.items()) if t["status"] == "done" and tid not in responded]
    if unbinned:
        rows = rebin_trials(store, rig, unbinned)
        by_id = {pl["trial_id"]: pl for pl in plans}
        for tid in unbinned:
            if not any(r["valid"] for r in rows if r["trial_id"] == tid):
                # Shown while nothing usable was recorded (the stream had stopped before its windows ended): no
                # response of it can be learned from, so its images are shown again, as an interrupted trial's.
                plan = by_id[tid]
                items = [(h, store.image(h), why) for h, why in zip(plan["image_hashes"], plan["reasons"])]
                requeue.extend(p.requeued(tid, items))
                store.log("resume", f"trial {tid} has no valid response: its images shown again")
    next_id = max([pl["trial_id"] for pl in plans] + [-1]) + 1
    return p.ResumePoint(
        next_id=next_id,
        completed=store.count("trials", "WHERE status = 'done'"),
        aborted=store.count("trials", "WHERE status = 'aborted'"),
        requeue=requeue,
    )


def rebin_trials(store: SessionStore, rig: RigConfig, trial_ids: list[int]) -> list[dict]:
    """Responses of trials that ended before the controller stopped, from what the store holds."""
    n_neurons = int(store.meta("neurons") or 0)
    record = SpikeRecord(n_neurons)
    lost: list[tuple[float, float]] = []
    last: dict[str, tuple[int, float]] = {}
    for stream, seq, t0, t1, total, neuron, times in store.spike_batches():  # in stream, seq order
        if stream in last and seq != last[stream][0] + 1:
            lost.append((last[stream][1], t0))
        last[stream] = (seq, t1)
        record.add(neuron, times, t1)
    codes = store.event_codes(clock="acquisition")
    onsets = store.onsets()
    labelled = onset_code_times(codes, onsets, rig.timing)
    pairs = np.array([(flip, labelled[(tid, idx)]) for tid, idx, _, flip, _ in onsets if (tid, idx) in labelled])
    fit = fit_clock(pairs[:, 0], pairs[:, 1]) if len(pairs) >= 2 else None
    edges = np.array(sorted(t for _, _, code, t, *_ in codes if code == m.Codes.PHOTODIODE))
    plans = {pl["trial_id"]: pl for pl in store.plans()}
    w0, w1 = rig.response.window_start_ms / 1000, rig.response.window_end_ms / 1000
    rows = []
    for tid in trial_ids:
        mine = [o for o in onsets if o[0] == tid]
        times, known = p.onset_times([labelled.get((tid, o[1])) for o in mine], [o[3] for o in mine], fit)
        if len(edges):
            times, _ = p.photodiode_onsets(times, edges, p.photodiode_max_lag_s(rig.timing))
        starts, ends = p.response_windows(times, w0, w1)
        complete = np.array([record.complete(e) for e in ends], bool)
        valid = p.windows_valid(starts, ends, lost, known & complete)
        counts = record.counts(np.nan_to_num(starts), np.nan_to_num(ends))
        plan = plans[tid]
        for k, o in enumerate(mine):
            rows.append(
                dict(
                    trial_id=tid,
                    idx=o[1],
                    image_hash=o[2],
                    onset_acq_s=float(np.nan_to_num(times[k])),
                    window_start_s=float(np.nan_to_num(starts[k])),
                    window_end_s=float(np.nan_to_num(ends[k])),
                    counts=counts[k],
                    valid=bool(valid[k]),
                    model_version=plan["model_version"],
                    source=plan["source"],
                    reason=plan["reasons"][o[1]],
                )
            )
        store.log(
            "resume",
            f"trial {tid} ended before the controller stopped: {len(mine)} responses binned from "
            f"the store ({int((~complete).sum())} windows the stream had not passed, kept invalid)",
        )
    store.put_responses(rows)
    return rows
