"""The virtual cortex process's sockets: native messages and the Open Ephys Event Broadcaster format."""

import json
import threading
import time

import numpy as np
import pytest
import zmq

from acquisition.openephys import UnitLayout, decode_message, spikes_from_messages
from acquisition.ttl import decode_transitions
from contract import messages as m
from controller.config import load_rig, with_overrides
from tests.helpers import SIM_RIG
from transport.links import resolve_endpoints
from transport.processes.acquisition import VirtualCortexService


def cortex_rig(**cortex):
    return with_overrides(
        load_rig(SIM_RIG),
        session={"speed": "max"},
        cortex={"population": {"n_neurons": 6, "seed": 2}, **cortex},
        images={"pool_size": 50, "test_size": 10},
    )


def run_cortex(rig, tmp_path, endpoints_off=(), n_onsets=20):
    """Run the cortex service, send it a white image and n_onsets onsets 0.2 s apart, then a trial end;
    returns (native messages, Open Ephys bodies)."""
    endpoints = resolve_endpoints(rig.endpoints, tmp_path)
    for name in endpoints_off:
        endpoints.pop(name)
    ctx = zmq.Context()
    service = VirtualCortexService(rig, endpoints, ctx=ctx)
    socks = {}
    for name in ("acquisition_pub", "openephys_pub"):
        if name in endpoints:
            socks[name] = ctx.socket(zmq.SUB)  # for Open Ephys: a plain client, pyzmq + json
            socks[name].setsockopt(zmq.SUBSCRIBE, b"")
            socks[name].connect(endpoints[name])
    push = ctx.socket(zmq.PUSH)
    push.connect(endpoints["acquisition_events"])
    thread = threading.Thread(target=service.run, daemon=True)
    native, oe = [], []
    try:
        if "acquisition_pub" in socks:
            thread.start()
            assert socks["acquisition_pub"].poll(10000)  # heartbeats: the subscription is live
        else:
            time.sleep(0.3)  # nothing is published on a virtual clock before the first code
            thread.start()
        img = np.full((32, 32, 3), 255, np.uint8)
        m.send(push, m.ScreenImage(image_hash="white", pixels=img))
        for k in range(n_onsets):
            m.send(
                push,
                m.EventCode(
                    stream="presenter",
                    seq=k,
                    code=m.Codes.IMAGE_ONSET,
                    time_s=1.0 + 0.2 * k,
                    clock="presenter",
                    trial_id=0,
                    index=k,
                    image_hash="white",
                ),
            )
        m.send(
            push,
            m.EventCode(
                stream="presenter",
                seq=99,
                code=m.Codes.TRIAL_END,
                time_s=1.0 + 0.2 * n_onsets,
                clock="presenter",
                trial_id=0,
            ),
        )
        m.send(
            push,
            m.EventCode(
                stream="presenter",
                seq=100,
                code=m.Codes.TRIAL_START,
                time_s=1.5 + 0.2 * n_onsets,
                clock="presenter",
                trial_id=1,
            ),
        )
        sock = socks.get("acquisition_pub")
        while sock is not None and sock.poll(2000):
            msg = m.decode(sock.recv_multipart())
            native.append(msg)
            if isinstance(msg, m.EventCode) and msg.code == m.Codes.TRIAL_START:
                break
        # Until the Open Ephys stream has been quiet for a second (the service thread can be held up for some
        # hundreds of ms on a busy machine; a shorter wait could end the read before the last of it).
        while "openephys_pub" in socks and socks["openephys_pub"].poll(1000):
            frames = socks["openephys_pub"].recv_multipart()
            oe.append((int(np.frombuffer(frames[0], "<u2")[0]), json.loads(frames[1]), decode_message(frames)))
    finally:
        m.send(push, m.Shutdown("test"))
        thread.join(10)
        service.close()
        for s in [*socks.values(), push]:
            s.close(0)
        ctx.term()
    return native, oe


def test_cortex_publishes_native_and_open_ephys_formats_with_the_same_times(tmp_path):
    rig = cortex_rig()
    native, oe = run_cortex(rig, tmp_path)
    fs = rig.session.acquisition_sample_rate_hz
    events = [x for x in native if isinstance(x, m.EventCode)]
    batches = [x for x in native if isinstance(x, m.SpikeBatch)]
    # Event codes come back stamped on the acquisition clock: offset + (1 + drift) * presenter time, on the
    # recording system's sample grid.
    rec = rig.cortex.recording
    onsets = [e for e in events if e.code == m.Codes.IMAGE_ONSET]
    assert len(onsets) == 20 and all(e.clock == "acquisition" for e in onsets)
    assert onsets[0].time_s == np.rint((rec.clock_offset_s + (1 + rec.clock_drift_ppm * 1e-6) * 1.0) * fs) / fs
    spikes_t = np.concatenate([b.time_s for b in batches])
    spikes_n = np.concatenate([b.neuron for b in batches])
    assert len(spikes_t) > 0 and np.array_equal(spikes_t, np.rint(spikes_t * fs) / fs)  # on the grid
    # A plain reader sees the Event Broadcaster's keys.
    oe_spikes = [b for kind, b, _ in oe if kind == 1]
    oe_ttl = [b for kind, b, _ in oe if kind == 0]
    s = oe_spikes[0]
    for key in (
        "event_type",
        "stream",
        "source_node",
        "electrode",
        "num_channels",
        "sample_rate",
        "sample_number",
        "sorted_id",
    ):
        assert key in s
    assert s["event_type"] == "spike" and all(f"amp{i + 1}" in s for i in range(s["num_channels"]))
    assert oe_ttl and {
        "event_type",
        "stream",
        "source_node",
        "sample_rate",
        "channel_name",
        "sample_number",
        "line",
        "state",
    } <= set(oe_ttl[0])
    # The same spikes, at exactly the same times, on both streams.
    n_back, t_back, skipped = spikes_from_messages([d for kind, _, d in oe if kind == 1], UnitLayout())
    assert skipped == 0 and np.array_equal(n_back, spikes_n) and np.array_equal(t_back, spikes_t)
    # Every code, the twenty equal onset words included, is read back from the TTL lines at its native time.
    words, unknown = decode_transitions(
        rig.cortex.ttl.lines(), [(b["sample_number"], b["line"], b["state"]) for b in oe_ttl]
    )
    assert unknown == 0
    assert [(w.sample / fs, w.value) for w in words] == [(e.time_s, e.code) for e in events]
    assert [e.code for e in events] == [m.Codes.IMAGE_ONSET] * 20 + [m.Codes.TRIAL_END, m.Codes.TRIAL_START]
    # The OE stream is in time order, spikes and TTLs together.
    samples = [b["sample_number"] for _, b, _ in oe]
    assert samples == sorted(samples)


def test_native_stream_off_photodiode_with_lag_and_strobe_words(tmp_path):
    rig = cortex_rig(
        recording={"photodiode_lag_ms": 20.0, "photodiode_jitter_ms": 5.0},
        ttl={"scheme": "strobe", "strobe_line": 7, "photodiode_line": 8, "pulse_ms": 2.0},
    )
    native, oe = run_cortex(rig, tmp_path, endpoints_off=("acquisition_pub",), n_onsets=10)
    assert native == []
    fs = rig.session.acquisition_sample_rate_hz
    ttl = [(b["sample_number"], b["line"], b["state"]) for kind, b, _ in oe if kind == 0]
    words, unknown = decode_transitions(rig.cortex.ttl.lines(), ttl)
    assert unknown == 0
    onsets = [w.sample for w in words if w.kind == "word" and w.value == m.Codes.IMAGE_ONSET]
    edges = [w.sample for w in words if w.kind == "photodiode"]
    assert len(onsets) == len(edges) == 10
    # Each onset's photodiode edge comes the display lag (20 ms) plus a jitter in [0, 5 ms) after its code.
    lag_ms = (np.array(edges) - np.array(onsets)) / fs * 1000
    assert np.all(lag_ms >= 20.0 - 1e-9) and np.all(lag_ms < 25.0) and lag_ms.std() > 0
    # The patch toggles: edges alternate rising and falling.
    assert [w.value for w in words if w.kind == "photodiode"] == [1, 0] * 5
    assert [w.value for w in words if w.kind == "word"] == [m.Codes.IMAGE_ONSET] * 10 + [
        m.Codes.TRIAL_END,
        m.Codes.TRIAL_START,
    ]


def test_a_cortex_with_no_output_is_refused(tmp_path):
    rig = cortex_rig()
    endpoints = resolve_endpoints(rig.endpoints, tmp_path)
    endpoints.pop("acquisition_pub")
    endpoints.pop("openephys_pub")
    with pytest.raises(ValueError, match="no output"):
        VirtualCortexService(rig, endpoints, ctx=zmq.Context.instance())
