"""The virtual cortex process's sockets: native messages and the Open Ephys Event Broadcaster format."""
import json
import threading

import numpy as np
import zmq

from controller import messages as m
from controller.config import load_rig, with_overrides
from controller.links import resolve_endpoints
from controller.services.cortex import VirtualCortexService
from tests.test_session import ROOT


def test_cortex_publishes_native_and_open_ephys_formats(tmp_path):
    rig = with_overrides(load_rig(ROOT / "rigs" / "sim.toml"), session={"speed": "max"},
                         cortex={"population": {"n_neurons": 6, "seed": 2}}, images={"pool_size": 50, "test_size": 10})
    endpoints = resolve_endpoints(rig.endpoints, tmp_path)
    ctx = zmq.Context()
    service = VirtualCortexService(rig, endpoints, ctx=ctx)
    native = ctx.socket(zmq.SUB)
    native.setsockopt(zmq.SUBSCRIBE, b"")
    native.connect(endpoints["acquisition_pub"])
    oe = ctx.socket(zmq.SUB)  # a plain Open Ephys client: pyzmq + json, nothing of cortexloop's
    oe.setsockopt(zmq.SUBSCRIBE, b"")
    oe.connect(endpoints["openephys_pub"])
    push = ctx.socket(zmq.PUSH)
    push.connect(endpoints["acquisition_events"])
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        # Wait until the subscriptions are live (heartbeats arrive on the native socket).
        assert native.poll(10000)
        img = np.full((32, 32, 3), 255, np.uint8)
        m.send(push, m.ScreenImage(image_hash="white", pixels=img))
        for k in range(20):  # twenty onsets, 0.2 s apart (presenter clock), then a trial end
            m.send(push, m.EventCode(stream="presenter", seq=k, code=m.Codes.IMAGE_ONSET, time_s=1.0 + 0.2 * k,
                                     clock="presenter", trial_id=0, index=k, image_hash="white"))
        m.send(push, m.EventCode(stream="presenter", seq=99, code=m.Codes.TRIAL_END, time_s=6.0, clock="presenter",
                                 trial_id=0))
        spikes, events, oe_spikes, oe_ttl = 0, [], [], []
        while native.poll(2000):
            msg = m.decode(native.recv_multipart())
            if isinstance(msg, m.SpikeBatch):
                spikes += len(msg.neuron)
            elif isinstance(msg, m.EventCode):
                events.append(msg)
            if events and events[-1].code == m.Codes.TRIAL_END:
                break
        while oe.poll(500):
            kind, body = oe.recv_multipart()
            obj = json.loads(body)
            (oe_spikes if np.frombuffer(kind, "<u2")[0] == 1 else oe_ttl).append(obj)
    finally:
        m.send(push, m.Shutdown("test"))
        thread.join(10)
        service.close()
        for s in (native, oe, push):
            s.close(0)
        ctx.term()
    # Event codes come back stamped on the acquisition clock: offset + (1 + drift) * presenter time.
    rec = rig.cortex.recording
    onsets = [e for e in events if e.code == m.Codes.IMAGE_ONSET]
    assert len(onsets) == 20 and all(e.clock == "acquisition" for e in onsets)
    assert onsets[0].time_s == rec.clock_offset_s + (1 + rec.clock_drift_ppm * 1e-6) * 1.0
    assert spikes > 0 and len(oe_spikes) == spikes
    s = oe_spikes[0]
    for key in ("event_type", "stream", "source_node", "electrode", "num_channels", "sample_rate", "sample_number",
                "sorted_id"):
        assert key in s
    assert s["event_type"] == "spike" and all(f"amp{i + 1}" in s for i in range(s["num_channels"]))
    assert oe_ttl and {"event_type", "stream", "source_node", "sample_rate", "channel_name", "sample_number", "line",
                       "state"} <= set(oe_ttl[0])
    # The onset code word (20 = lines 2 and 4 high) is readable from the TTL lines at the first onset's sample.
    first = [t for t in oe_ttl if t["sample_number"] == oe_ttl[0]["sample_number"]]
    assert sum(1 << t["line"] for t in first if t["state"]) == m.Codes.IMAGE_ONSET
