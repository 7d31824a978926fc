"""A session on the simulated rig speaking the Event Broadcaster format the way a real GUI sends it: units named by
the Spike Sorter's one counter, another TTL channel pulsing on the stream, a rate float32 cannot hold (3333.33
Hz), and every code word's lines sent 300-600 ms late (past the 100 ms clock margin), one line at a time."""

import threading

import numpy as np
import zmq

from contract import messages as m
from controller.config import with_overrides
from records.store import SessionStore
from tests.helpers import OPENEPHYS_NEURONS, free_port, openephys_rig, small_rig
from transport.launch import run_session

RATE = 3333.33


def listen(endpoint: str, heard: list, stop: threading.Event) -> None:
    """The virtual cortex's native stream, heard beside the session: what it really sent."""
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.RCVHWM, 0)
    sub.connect(endpoint)
    try:
        while not stop.is_set():
            if sub.poll(50):
                heard.append(m.decode(sub.recv_multipart()))
    finally:
        sub.close(0)


def test_a_rehearsal_as_a_gui_sends_it_recovers_every_mapped_spike_and_every_code(tmp_path):
    native = f"tcp://127.0.0.1:{free_port()}"
    rig = with_overrides(
        openephys_rig(
            with_overrides(small_rig(n_trials=3, speed="realtime"), model={"kind": "baseline"}),
            ttl_channel="TTL Input",
        ),
        session={"acquisition_sample_rate_hz": RATE},
        fixation={"break_probability": 0.0},
        rehearsal={"ttl_delay_ms": 300.0, "other_ttl_channel_hz": 40.0},
        endpoints={"acquisition_pub": native},  # published beside the Open Ephys stream; the session reads only that
    )
    heard, stop = [], threading.Event()
    listener = threading.Thread(target=listen, args=(native, heard, stop), daemon=True)
    listener.start()
    try:
        summary = run_session(rig, tmp_path / "s")
    finally:
        stop.set()
        listener.join(10)
    assert summary["status"] == "completed" and summary["trials_done"] == 3
    acq = summary["acquisition"]
    assert acq["ttl_channel"] == "TTL Input" and acq["other_channel_ttl_events"] > 0  # the other channel, ignored
    for skipped in ("unknown_unit_spikes", "unsorted_spikes", "foreign_events", "late_spikes", "malformed_messages"):
        assert acq[skipped] == 0, skipped
    store = SessionStore.open(tmp_path / "s")
    try:
        batches = store.spike_batches()
        codes = [(c, t) for _, _, c, t, clock, *_ in store.event_codes("acquisition")]
        responses = store.conn.execute("SELECT valid FROM responses").fetchall()
        missing = store.count("log", "WHERE kind = 'event_missing'")
    finally:
        store.close()
    neuron = np.concatenate([b[5] for b in batches])
    times = np.concatenate([b[6] for b in batches])
    assert len(set(neuron.tolist())) == OPENEPHYS_NEURONS  # every unit heard under the GUI's numbering
    # Every spike the cortex sent while the session listened is stored, at its sample time.
    sent = [b for b in heard if isinstance(b, m.SpikeBatch)]
    sent_n = np.concatenate([b.neuron for b in sent])
    sent_t = np.concatenate([b.time_s for b in sent])
    inside = (sent_t >= times.min()) & (sent_t <= times.max())
    assert sorted(zip(neuron.tolist(), times.tolist())) == sorted(zip(sent_n[inside].tolist(), sent_t[inside].tolist()))
    # Every code word, the repeated onset codes included, rebuilt once and whole from the late, split lines.
    sent_codes = [(e.code, e.time_s) for e in heard if isinstance(e, m.EventCode) and e.code != m.Codes.PHOTODIODE]
    first, last = codes[0][1], codes[-1][1]
    assert codes == [c for c in sent_codes if first <= c[1] <= last]
    onsets = [c for c in codes if c[0] == m.Codes.IMAGE_ONSET]
    assert len(onsets) == summary["images_shown"] == 3 * rig.trial.images_per_trial
    assert missing == 0 and len(responses) == len(onsets) and all(v for (v,) in responses)
