"""`cortexloop replay SESSION`: play a stored session's acquisition stream back through the sockets.

A replay process publishes the recorded spike batches and event codes on the
acquisition socket, exactly as a recording system would; this side subscribes
like the controller does, stores what it receives in a new session directory,
bins responses with the recorded onsets and the rig's response window, and
compares them with the responses stored during the recording.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zmq

from acquisition.binning import SpikeRecord
from controller import messages as m
from controller.config import parse_rig
from controller.links import Receiver, resolve_endpoints
from controller.session import n_neurons_of
from controller.store import SessionStore


def run_replay(source_dir: Path, out_dir: Path, speed: float | None = None, timeout_s: float = 600.0) -> dict:
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    src = SessionStore.open(source_dir)
    rig = parse_rig(json.loads(src.rig_json()), str(source_dir / "session.sqlite"))
    recorded = src.responses(valid_only=False)
    src.close()
    out = SessionStore.create(out_dir, rig.model_dump_json())
    out.set_meta("replay_of", str(source_dir.resolve()))
    endpoints = resolve_endpoints(rig.endpoints.model_copy(update={"acquisition_pub": "auto",
                                                                    "acquisition_events": "auto"}), out_dir)
    (out_dir / "endpoints.json").write_text(json.dumps(endpoints))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    cmd = [sys.executable, "-m", "controller.cli", "serve", "replay", "--source", str(source_dir),
           "--endpoints", str(out_dir / "endpoints.json"), "--parent-pid", str(os.getpid())]
    if speed:
        cmd += ["--replay-speed", str(speed)]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect(endpoints["acquisition_pub"])
    control = ctx.socket(zmq.PUSH)
    control.setsockopt(zmq.LINGER, 1000)
    control.connect(endpoints["acquisition_events"])
    receiver = Receiver(sub)
    record = SpikeRecord(n_neurons_of(rig))
    onsets: dict[tuple[int, int], float] = {}
    n_batches = n_spikes = 0
    started = False
    end = time.monotonic() + timeout_s
    try:
        while time.monotonic() < end:
            if not sub.poll(200):
                if proc.poll() is not None:
                    break
                continue
            msg = receiver.recv()
            if isinstance(msg, m.Heartbeat) and msg.role == "replay" and not started:
                m.send(control, m.Heartbeat(role="controller", seq=0, clock_s=0.0))
                started = True
            elif isinstance(msg, m.SpikeBatch):
                out.put_spikes(msg)
                record.add(msg.neuron, msg.time_s, msg.t_end_s)
                n_batches += 1
                n_spikes += len(msg.neuron)
            elif isinstance(msg, m.EventCode):
                out.put_event(msg)
                if msg.code == m.Codes.IMAGE_ONSET:
                    onsets[(msg.trial_id, msg.index)] = msg.time_s
            elif isinstance(msg, m.Shutdown):
                break
    finally:
        try:
            m.send(control, m.Shutdown("replay listener done"), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass
        sub.close(0)
        control.close(linger=500)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    # Re-bin the recorded presentations from the replayed stream.
    w0, w1 = rig.response.window_start_ms / 1000, rig.response.window_end_ms / 1000
    keys = list(zip(recorded["trial_id"].tolist(), recorded["index"].tolist()))
    have = [k for k in keys if k in onsets]
    t = np.array([onsets[k] for k in have])
    counts = record.counts(t + w0, t + w1) if len(have) else np.zeros((0, record.n_neurons), np.float32)
    stored = {k: c for k, c in zip(keys, recorded["counts"])}
    hash_of = dict(zip(keys, recorded["image_hash"]))
    same = sum(bool(np.array_equal(stored[k], c)) for k, c in zip(have, counts))
    out.put_responses([dict(trial_id=k[0], idx=k[1], image_hash=hash_of[k],
                            onset_acq_s=float(ti), window_start_s=float(ti + w0), window_end_s=float(ti + w1),
                            counts=c, valid=True, model_version=-1, source="replay", reason="replayed")
                       for k, ti, c in zip(have, t, counts)])
    summary = {"source": str(source_dir.resolve()), "replay_dir": str(out_dir.resolve()), "batches": n_batches,
               "spikes": n_spikes, "event_codes": out.count("event_codes"), "responses_recorded": len(keys),
               "responses_rebinned": len(have), "responses_identical": same,
               "malformed_messages_dropped": receiver.malformed}
    out.set_meta("status", "replayed")
    out.close()
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
