"""A session: the engine over a world's parts, from the store's creation to the summary.

Ending is always the same path, whether the session finished, was interrupted
(Ctrl-C / SIGTERM) or lost a part: compute the summary from what was recorded
(nothing in it can abort again), close the parts, close the store.

`run_controller` is the controller process of `cortexloop run`; `run_in_process`
runs the same engine and protocol with every part in this process (benchmarks,
tests, replay).
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
import torch

from acquisition.population import Population
from contract.parts import SessionAbort
from controller.config import RigConfig
from controller.engine import SessionEngine, SessionParts
from controller.protocol import trial_protocol
from models.metrics import correlation
from records.space import (
    FLOOR_SHARE,
    DiskFull,
    disk_full_message,
    free_mb,
    is_disk_full,
    min_free_mb,
    write_summary_with_room,
)
from records.store import SessionStore
from records.summary import format_table, noise_ceilings, percentile
from stimulus.pools import make_pools

log = logging.getLogger("cortexloop.controller")


class Interrupted(Exception):
    """The session was stopped by SIGINT or SIGTERM; the message is the signal's name."""


class _StopSignals:
    """SIGINT/SIGTERM raise Interrupted where the controller is. Python runs a signal handler at whatever line it
    reaches next, and there the exception can be swallowed (inside a zmq frame's __dealloc__ it is only printed as
    "Exception ignored"); so the signal is also remembered and raised again from the engine's once-a-second check
    (`alive`, its launcher_alive)."""

    def __init__(self, launcher_alive=None):
        self.received: list[str] = []
        self.launcher_alive = launcher_alive

    def handler(self, signum, frame):
        self.received.append(signal.Signals(signum).name)
        raise Interrupted(self.received[-1])

    def alive(self) -> bool:
        if self.received:
            raise Interrupted(self.received[0])
        return self.launcher_alive is None or self.launcher_alive()


class _SpaceWatch:
    """Free space at the store, checked before the first trial and after each: a warning once it falls below
    session.min_free_mb, DiskFull below FLOOR_SHARE of it (while the store can still record why)."""

    def __init__(self, rig: RigConfig, session_dir: Path, store: SessionStore, board=None):
        self.need, self.session_dir, self.store, self.board = min_free_mb(rig), session_dir, store, board
        self.warned = False

    def check(self) -> None:
        if self.need <= 0:
            return
        free = free_mb(self.session_dir)
        if free < self.need * FLOOR_SHARE:
            raise DiskFull(self.session_dir, self.session_dir)
        if free < self.need and not self.warned:
            self.warned = True
            text = (
                f"free space at {self.session_dir.resolve()} is {free:.1f} MB, below session.min_free_mb "
                f"({self.need:.1f} MB): the session ends cleanly below {self.need * FLOOR_SHARE:.1f} MB; free space "
                f"now to go on"
            )
            self.store.log("disk", text)
            log.warning(text)
            if self.board is not None:
                self.board.warn(text)
            else:
                print(f"WARNING: {text}", file=sys.stderr, flush=True)

    def wrap(self, after_update):
        def checked(engine, trial_id):
            said = after_update(engine, trial_id) if after_update is not None else None
            self.check()
            return said

        return checked


def _quietly(what, *args) -> None:
    """A write of the session's end that a full disk may refuse: the end goes on without it."""
    try:
        what(*args)
    except (sqlite3.Error, OSError) as err:
        if not is_disk_full(err):
            raise
        log.warning("disk full: %s not written", getattr(what, "__name__", what))


def run_controller(
    rig: RigConfig,
    session_dir: Path,
    parts: SessionParts,
    store: SessionStore | None = None,
    truth=None,
    after_update=None,
    quiet: bool = False,
    max_attempts: int | None = None,
    board=None,
    resume: bool = False,
    launcher_alive=None,
    pools=None,
) -> dict:
    """Run one session over `parts`; returns the summary (also written to SESSION/summary.json).

    truth: a function images -> true rates, for held-out accuracy (`rig_truth(rig)` for the rig file's
    virtual cortex; None where no truth is known, as on a live rig). after_update(engine, trial_id): called
    after each trial's responses went to the model (benchmarks measure the model there). board: a
    controller.status.StatusBoard kept up to date while the session runs. resume: go on with the session the
    store holds (records/resume.py) instead of starting one. pools: the rig's pools if built already."""
    session_dir = Path(session_dir)
    store = store or (
        SessionStore.open(session_dir) if resume else SessionStore.create(session_dir, rig.model_dump_json())
    )
    pools = pools if pools is not None else make_pools(rig.images)
    status = "completed"
    stops = _StopSignals(launcher_alive)
    previous = {s: signal.signal(s, stops.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    t0 = time.monotonic()
    engine = None
    space = _SpaceWatch(rig, session_dir, store, board)
    try:
        space.check()
        engine = SessionEngine(rig, store, parts, pools)
        engine.after_update = space.wrap(after_update)
        engine.status = board
        engine.launcher_alive = stops.alive
        point = None
        if resume:
            from records.resume import resume_point

            point = resume_point(store, rig)
            store.set_meta("resumed", str(int(store.meta("resumed") or 0) + 1))
            store.log(
                "session",
                f"resumed at trial {point.next_id}: {point.completed} done, {point.aborted} "
                f"aborted, {len(point.requeue)} images to show again",
            )
        store.set_meta("status", "running")  # until the end says otherwise (a killed controller leaves it)
        engine.start()
        if resume:
            engine.relearn_stored_responses()
        finish = engine.run(
            trial_protocol(
                rig.session.n_trials, rig.trial.queue_depth, rig.trial.images_per_trial, max_attempts, resume=point
            )
        )
        if engine.ended_early:
            status = f"completed (ended early: {engine.ended_early})"
        elif finish is not None and finish.completed < rig.session.n_trials:
            status = stopped_short(finish.completed, finish.aborted, rig.session.n_trials, max_attempts)
            store.log("session", status)
    except Interrupted as why:
        reason = session_dir / "stop_reason"  # the launcher's word on why it stopped the session
        told = reason.read_text().strip() if reason.exists() else ""
        # The launcher's own signal (Ctrl-C at its terminal: SIGINT) rather than the SIGTERM it sent on.
        status = f"aborted: {told}" if told.startswith("the ") else (told or f"interrupted ({why})")
        store.log("session", status)
    except SessionAbort as why:
        status = f"aborted: {why}"
        store.log("session", status)
    except DiskFull as full:
        status = str(full)
        _quietly(store.log, "session", status)
    except (sqlite3.Error, OSError) as err:
        if not is_disk_full(err):
            raise
        status = disk_full_message(session_dir, session_dir)
        log.error("%s (%s)", status, err)
        _quietly(store.log, "session", status)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if engine is not None and engine.status is not None:
        engine.status.close()
        engine.status = None
    try:
        try:
            summary = build_summary(rig, engine, store, session_dir, status, time.monotonic() - t0, truth)
        except (sqlite3.Error, OSError) as err:
            # Asking the model for its figures lets messages in, which are stored first: on a full disk the
            # summary comes from what the store holds, as the launcher's would.
            if not is_disk_full(err):
                raise
            if not status.startswith("disk full"):
                status = disk_full_message(session_dir, session_dir)
            summary = build_summary(rig, None, store, session_dir, status, time.monotonic() - t0)
    finally:
        if engine is not None:
            engine.close()
        _quietly(store.set_meta, "status", status)
        _quietly(store.close)
    write_summary_with_room(session_dir, summary)
    if not quiet:
        print(format_table(summary), flush=True)
    return summary


def stopped_short(completed: int, aborted: int, n_trials: int, max_attempts: int | None) -> str:
    """The status of a session the protocol ended before n_trials were done: it made the most attempts a session
    makes (max_attempts; by default 2 x n_trials)."""
    cap = "2 x session.n_trials" if max_attempts is None else f"{max_attempts}"
    return (
        f"stopped short: {completed} of {n_trials} trials done after {completed + aborted} attempts, the most a "
        f"session makes ({cap}); {aborted} aborted (each trial's reason is in the store)"
    )


def summary_from_store(rig: RigConfig, session_dir: Path, status: str) -> dict:
    """The summary of a session whose controller could not write one, from what the store holds; the store's
    status says what happened."""
    store = SessionStore.open(session_dir)
    try:
        _quietly(store.set_meta, "status", status)
        summary = build_summary(rig, None, store, session_dir, status, float("nan"))
    finally:
        _quietly(store.close)
    write_summary_with_room(session_dir, summary)
    return summary


def run_in_process(
    rig: RigConfig,
    session_dir: Path,
    population=None,
    hypotheses=None,
    truth=None,
    after_update=None,
    quiet: bool = True,
    checkpoints: bool = False,
) -> tuple[dict, SessionParts]:
    """The simulated rig with every part in this process; returns the summary and the parts (whose model a
    benchmark may look at). Torch's thread count is restored afterwards. checkpoints: the model part keeps its
    checkpoint in session_dir/checkpoints as the model process of `cortexloop run` does (every few model
    versions), and the session's last model there at the end (a later session's model.init_from starts from it)."""
    from controller.worlds import in_process_parts

    threads = torch.get_num_threads()
    try:
        pools = make_pools(rig.images)  # one build serves the engine and the model part
        checkpoint_dir = Path(session_dir) / "checkpoints" if checkpoints else None
        parts = in_process_parts(
            rig, population=population, hypotheses=hypotheses, pools=pools, checkpoint_dir=checkpoint_dir
        )
        if truth is None:
            truth = population.rates if population is not None else rig_truth(rig)
        summary = run_controller(
            rig, session_dir, parts, truth=truth, after_update=after_update, quiet=quiet, pools=pools
        )
        if checkpoint_dir is not None and parts.model.trainer is None and parts.model.model is not None:
            parts.model.save_checkpoint(parts.model.model.version, final=True)  # the session's last model too
    finally:
        torch.set_num_threads(threads)
    return summary, parts


def rig_truth(rig: RigConfig):
    """The true rates of the rig file's virtual cortex, in the session's neuron order; None where the recording
    system is not the virtual cortex (a live rig), or where a unit of the Open Ephys unit map is not one of its
    neurons. The virtual cortex publishes neuron n as ("Electrode n+1", sorted_id n+1), numbered as the GUI's Spike
    Sorter numbers units (acquisition/openephys.py)."""
    if not rig.cortex.has_virtual_cortex:
        return None
    rates = Population(rig.cortex.population, rig.images.size_px, rig.images.colour).rates
    if rig.cortex.source in ("virtual", "lsl"):  # over LSL the virtual cortex sends neuron n as unit n
        return rates
    from acquisition.openephys import UnitLayout

    layout = UnitLayout()
    order = [layout.neuron_of(rig.cortex.openephys.electrode_name(e), u) for e, u in rig.cortex.openephys.units]
    if any(n is None for n in order):
        return None
    order = np.array(order)

    def truth(images):
        r = rates(images)
        out = np.full((r.shape[0], len(order)), np.nan)  # a unit beyond the population has no truth
        there = order < r.shape[1]
        out[:, there] = r[:, order[there]]
        return out

    return truth


def heldout_r(rates: np.ndarray, true_rates: np.ndarray) -> np.ndarray:
    """Per neuron: correlation of the members' mean prediction (members, n, N) with the true rates (n, >= N)."""
    pred = rates.mean(0)
    return correlation(pred, true_rates[:, : pred.shape[1]])


def heldout_accuracy(engine: SessionEngine, truth, timeout_s: float = 60.0) -> tuple[list[float] | None, float | None]:
    """Correlation of the model's mean prediction with the truth on the held-out test images, per neuron."""
    reply = engine.predict(engine.pools.test, timeout_s)
    if reply is None or not reply.rates.size:
        return None, None
    r = heldout_r(reply.rates, truth(engine.pools.test))
    return [float(v) for v in r], float(np.median(r))


def stored_counts(store: SessionStore) -> dict:
    """The valid responses' image hashes and counts (n, N), without their pixels (for the noise ceiling)."""
    rows = store.conn.execute(
        "SELECT image_hash, counts FROM responses WHERE valid = 1 ORDER BY trial_id, idx"
    ).fetchall()
    counts = np.stack([np.frombuffer(r[1], np.float32) for r in rows]) if rows else np.zeros((0, 0), np.float32)
    return {"image_hash": [r[0] for r in rows], "counts": counts}


def ceiling_figures(rig: RigConfig, truth, test_images, store: SessionStore, n_neurons: int | None) -> dict:
    """The summary keys of the noise ceilings (records/summary.py says what each is); never raises."""
    try:
        ceil = noise_ceilings(rig, truth, test_images, stored_counts(store), n_neurons)
    except Exception as err:  # a figure, not a reason to lose the summary
        log.warning("noise ceiling not computed: %r", err)
        return {"noise_ceiling": {"error": repr(err)}}
    return {
        "noise_ceiling": ceil,
        "noise_ceiling_truth_median": (ceil["truth"] or {}).get("median"),
        "noise_ceiling_repeats_median": (ceil["repeats"] or {}).get("median"),
    }


def steps_per_trial(rig: RigConfig, training_steps, trials_done: int) -> dict:
    """Training steps per completed trial as done, and the budget a virtual clock gives (None on a wall clock,
    where the model trains in the background for as long as it has)."""
    done = None if not training_steps or not trials_done else training_steps / trials_done
    return {
        "training_steps_per_trial": done,
        "training_steps_per_trial_budget": rig.model.steps_per_trial if rig.session.speed == "max" else None,
    }


def build_summary(
    rig: RigConfig,
    engine: SessionEngine | None,
    store: SessionStore,
    session_dir: Path,
    status: str,
    duration_s: float,
    truth=None,
) -> dict:
    """The figures of a session, from the store and the engine's counters. Never raises for a dead part."""
    done = store.count("trials", "WHERE status = 'done'")
    aborted = store.count("trials", "WHERE status = 'aborted'")
    frames = store.frame_timing()
    errors_ms = frames["onset_to_flip_error_s"] * 1000
    out = {
        "status": status,
        "speed": rig.session.speed,
        "engine_mode": None if engine is None else engine.parts.mode,
        "resumed": int(store.meta("resumed") or 0),
        "duration_s": duration_s,
        "trials_done": done,
        "trials_aborted": aborted,
        "images_shown": store.count("onsets"),
        "responses_valid": store.count("responses", "WHERE valid = 1"),
        "responses_invalid": store.count("responses", "WHERE valid = 0"),
        # Of the invalid: the stream silent over the window, the image not shown as planned (both shown again).
        "responses_stream_silent": store.count("log", "WHERE kind = 'window_uncovered'"),
        "responses_misshown": store.count("log", "WHERE kind = 'presentation_fault'"),
        "dropped_frames": frames["dropped_frames"],
        "frames_shown": int(len(frames["frame_intervals_s"]) + frames["trials"]),
        "onset_to_flip_error_ms_median": float(np.median(errors_ms)) if len(errors_ms) else None,
        "onset_to_flip_error_ms_max": float(np.max(errors_ms)) if len(errors_ms) else None,
        "model_kind": rig.model.kind,
        "session_dir": str(Path(session_dir).resolve()),
    }
    if engine is None:  # from the store alone
        row = store.conn.execute("SELECT SUM(LENGTH(neuron)) / 2 FROM spike_batches").fetchone()
        out.update(
            {
                "neurons": int(store.meta("neurons") or 0),
                "spikes_received": int(row[0] or 0),
                "plans": store.count("plans"),
            }
        )
        # Without the engine no model answers for held-out accuracy; the repeats' ceiling is in the store.
        out.update(ceiling_figures(rig, None, None, store, None))
        return out
    fit = engine.clock_fit()
    # A session that ended badly may have lost its model worker too: the summary waits only briefly for it.
    wait_s = 60.0 if status.startswith("completed") else 5.0
    model_info = engine.model_status(min(wait_s, 10.0)) if engine.last_seen.get("model") else {}
    per_neuron, median = None, None
    if truth is not None and engine.last_seen.get("model") and engine.n_neurons:
        per_neuron, median = heldout_accuracy(engine, truth, wait_s if model_info else 1.0)
    total_plans = engine.plans_on_time + engine.plans_late
    lat = [x * 1000 for x in engine.latencies_s]
    streams = engine.streams.values()
    out.update(
        {
            "neurons": engine.n_neurons,
            "spikes_received": sum(s.received_spikes for s in streams),
            "spikes_lost": sum(s.lost_spikes for s in streams),
            "batches_lost": sum(s.lost_batches for s in streams),
            "batches_out_of_order": sum(s.out_of_order_batches for s in streams),
            "batches_malformed": engine.bad_batches,
            "loop_latency_p50_ms": percentile(lat, 50),
            "loop_latency_p99_ms": percentile(lat, 99),
            "plans_on_time": engine.plans_on_time,
            "plans_late": engine.plans_late,
            "plans_on_time_share": engine.plans_on_time / total_plans if total_plans else None,
            "presenter": engine.presenter_info,
            "presenter_gaps": len(engine.gaps),
            "presenter_gap_s": float(sum(b - a for a, b in engine.gaps)),
            "malformed_messages_dropped": sum(part.malformed() for part in engine.parts.all()),
            "acquisition": {**engine.source_info, **engine.parts.source.counters()},
            "photodiode": None
            if not engine.uses_photodiode
            else {
                "edges": len(engine.photodiode_edges),
                "onsets_with_edge": len(engine.photodiode_latencies_s),
                "onsets_without_edge": engine.onsets_without_photodiode,
                "latency_ms_median": percentile([x * 1000 for x in engine.photodiode_latencies_s], 50),
                "latency_ms_p99": percentile([x * 1000 for x in engine.photodiode_latencies_s], 99),
            },
            "clock_alignment": None
            if fit is None
            else {
                "offset_s": fit.offset_s,
                "drift_ppm": fit.drift_ppm,
                "residual_rms_ms": fit.residual_rms_s * 1000,
                "residual_max_ms": fit.residual_max_s * 1000,
                "pairs": fit.n_pairs,
            },
            "model_version": model_info.get("version"),
            "model": model_info,
            "heldout_median_r": median,
            "heldout_r_per_neuron": per_neuron,
            "hypothesis_evidence": model_info.get("evidence"),
            # MEIs' observed over predicted rates, median over neurons (stimulus/mei_hold.py; the model's status
            # holds the per-neuron figures under model.mei_hold).
            "mei_observed_over_predicted_median": (model_info.get("mei_hold") or {}).get("median_ratio"),
            **steps_per_trial(rig, model_info.get("training_steps"), done),
            **ceiling_figures(rig, truth, engine.pools.test if truth is not None else None, store, engine.n_neurons),
        }
    )
    return out
