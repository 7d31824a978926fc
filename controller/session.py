"""The controller process: opens the store, runs the trial protocol, writes the summary.

Ending is always the same path, whether the session finished, was interrupted
(Ctrl-C / SIGTERM) or lost a process: tell the peers to stop, compute the
summary from what was recorded, close the store.
"""
from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import numpy as np

from acquisition.population import Population, population_size
from controller.config import RigConfig
from controller.engine import SessionAbort, SessionEngine
from controller.protocol import trial_protocol
from controller.store import SessionStore
from controller.summary import format_table, percentile, write_summary
from models.metrics import correlation
from stimulus.pools import make_pools

log = logging.getLogger("cortexloop.controller")


class Interrupted(Exception):
    pass


def _raise_interrupt(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def n_neurons_of(rig: RigConfig) -> int:
    return population_size(rig.cortex.population, rig.images.size_px, rig.images.colour)


def run_controller(rig: RigConfig, session_dir: Path, endpoints: dict[str, str], store: SessionStore | None = None) -> dict:
    session_dir = Path(session_dir)
    store = store or SessionStore.create(session_dir, rig.model_dump_json())
    pools = make_pools(rig.images)
    engine = SessionEngine(rig, store, endpoints, pools, n_neurons_of(rig))
    status = "completed"
    previous = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    t0 = time.monotonic()
    try:
        engine.wait_until_ready()
        engine.run(trial_protocol(rig.session.n_trials, rig.trial.queue_depth))
    except Interrupted as why:
        status = f"interrupted ({why})"
        store.log("session", status)
    except SessionAbort as why:
        status = f"aborted: {why}"
        store.log("session", status)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    try:
        summary = build_summary(rig, engine, store, session_dir, status, time.monotonic() - t0)
    finally:
        engine.shutdown_peers(status)
        engine.close()
        store.set_meta("status", status)
        store.close()
    write_summary(session_dir, summary)
    print(format_table(summary), flush=True)
    return summary


def build_summary(rig: RigConfig, engine: SessionEngine, store: SessionStore, session_dir: Path, status: str,
                  duration_s: float) -> dict:
    done = store.count("trials", "WHERE status = 'done'")
    aborted = store.count("trials", "WHERE status = 'aborted'")
    fit = engine.clock_fit()
    model_info = engine.model_status() if engine.last_seen.get("model") else {}
    per_neuron, median = None, None
    if rig.cortex.source == "virtual" and engine.last_seen.get("model"):
        reply = engine.predict(engine.pools.test)
        if reply is not None and reply.rates.size:
            truth = Population(rig.cortex.population, rig.images.size_px, rig.images.colour).rates(engine.pools.test)
            pred = reply.rates.mean(0)
            r = correlation(pred, truth[:, :pred.shape[1]])
            per_neuron = [float(v) for v in r]
            median = float(np.median(r))
    total_plans = engine.plans_on_time + engine.plans_late
    frames = store.frame_timing()
    errors_ms = frames["onset_to_flip_error_s"] * 1000
    lat = [x * 1000 for x in engine.latencies_s]
    return {
        "status": status,
        "speed": rig.session.speed,
        "duration_s": duration_s,
        "trials_done": done,
        "trials_aborted": aborted,
        "images_shown": store.count("onsets"),
        "neurons": engine.n_neurons,
        "spikes_received": sum(s.received_spikes for s in engine.streams.values()),
        "spikes_lost": sum(s.lost_spikes for s in engine.streams.values()),
        "batches_lost": sum(s.lost_batches for s in engine.streams.values()),
        "responses_valid": store.count("responses", "WHERE valid = 1"),
        "responses_invalid": store.count("responses", "WHERE valid = 0"),
        "loop_latency_p50_ms": percentile(lat, 50),
        "loop_latency_p99_ms": percentile(lat, 99),
        "plans_on_time": engine.plans_on_time,
        "plans_late": engine.plans_late,
        "plans_on_time_share": engine.plans_on_time / total_plans if total_plans else None,
        "dropped_frames": frames["dropped_frames"],
        "frames_shown": int(len(frames["frame_intervals_s"]) + frames["trials"]),
        "onset_to_flip_error_ms_median": float(np.median(errors_ms)) if len(errors_ms) else None,
        "onset_to_flip_error_ms_max": float(np.max(errors_ms)) if len(errors_ms) else None,
        "presenter": engine.presenter_info,
        "presenter_gaps": len(engine.gaps),
        "presenter_gap_s": float(sum(b - a for a, b in engine.gaps)),
        "malformed_messages_dropped": sum(r.malformed for r in engine.receivers.values()),
        "clock_alignment": None if fit is None else {
            "offset_s": fit.offset_s, "drift_ppm": fit.drift_ppm, "residual_rms_ms": fit.residual_rms_s * 1000,
            "residual_max_ms": fit.residual_max_s * 1000, "pairs": fit.n_pairs},
        "model_kind": rig.model.kind,
        "model_version": model_info.get("version"),
        "model": model_info,
        "heldout_median_r": median,
        "heldout_r_per_neuron": per_neuron,
        "hypothesis_evidence": model_info.get("evidence"),
        "session_dir": str(Path(session_dir).resolve()),
    }
