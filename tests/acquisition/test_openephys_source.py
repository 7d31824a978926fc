"""The Open Ephys source against a plain pyzmq PUB speaking the Event Broadcaster's JSON format."""

import json
import struct
import time

import numpy as np
import pytest
import zmq

from acquisition.config import OpenEphysConfig, TtlConfig
from acquisition.openephys import encode_spikes, encode_ttl
from acquisition.openephys_source import OpenEphysSource
from acquisition.ttl import TtlEncoder
from contract import messages as m
from controller.clocks import VirtualClock, WallClock
from tests.helpers import of

RATE = 30000.0


def spike(electrode, sorted_id, sample, **changes):
    kind, body = encode_spikes(np.array([0]), np.array([sample / RATE]), RATE, num_channels=2)[0]
    body = {**json.loads(body), "electrode": electrode, "sorted_id": sorted_id, **changes}
    return [kind, json.dumps(body).encode()]


@pytest.fixture
def pub():
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUB)
    sock.bind("tcp://127.0.0.1:*")
    yield sock
    sock.close(0)


def source(pub, clock=None, **cfg):
    cfg = OpenEphysConfig(**{"units": [["Electrode 3", 1], [1, 2], ["Tetrode 2", 1]], "clock_margin_ms": 10.0, **cfg})
    src = OpenEphysSource(
        cfg, TtlConfig(photodiode_line=9), pub.getsockopt_string(zmq.LAST_ENDPOINT), RATE, clock or VirtualClock()
    )
    assert src.describe(5.0)["n_neurons"] == 3
    return src


def take(src, until, timeout_s=5.0):
    """Poll until `until(messages so far)` holds."""
    got, end = [], time.monotonic() + timeout_s
    while not until(got) and time.monotonic() < end:
        got.extend(src.poll(0.05))
    return got


def test_units_are_mapped_in_order_and_unsorted_or_unknown_units_skipped_and_counted(pub):
    src = source(pub)
    try:
        sent = [
            ("Electrode 3", 1, 300),
            ("Electrode 1", 2, 330),
            ("Electrode 3", 0, 360),  # unsorted
            ("Electrode 3", 2, 390),
            ("Stereotrode 1", 1, 420),  # unknown units
            ("Tetrode 2", 1, 450),
            ("Electrode 3", 1, 30_000),
        ]
        for e, u, s in sent:
            pub.send_multipart(spike(e, u, s))
        # Until the four spikes and a heartbeat after the last one are in: a busy machine may split them over polls.
        msgs = take(
            src,
            lambda g: (
                sum(len(b.neuron) for b in of(g, m.SpikeBatch)) >= 4
                and any(h.clock_s >= 0.99 - 1e-9 for h in of(g, m.Heartbeat))
            ),
        )
    finally:
        src.close()
    batches = of(msgs, m.SpikeBatch)
    neuron = np.concatenate([b.neuron for b in batches])
    times = np.concatenate([b.time_s for b in batches])
    assert neuron.tolist() == [0, 1, 2, 0]
    assert times.tolist() == [300 / RATE, 330 / RATE, 450 / RATE, 1.0]
    assert [b.seq for b in batches] == list(range(1, len(batches) + 1))
    assert batches[-1].total_spikes == 4
    # The stream is known up to the latest sample less the margin (10 ms); on a virtual clock no further.
    assert batches[-1].t_end_s == pytest.approx(1.0 - 0.010)
    c = src.counters()
    assert c["unsorted_spikes"] == 1 and c["unknown_unit_spikes"] == 2 and c["spikes"] == 4
    assert ["Electrode 3", 2, 1] in c["unknown_units"] and ["Stereotrode 1", 1, 1] in c["unknown_units"]
    hb = of(msgs, m.Heartbeat)
    assert hb and hb[-1].role == "acquisition" and hb[-1].stream == "openephys"
    assert max(h.clock_s for h in hb) == pytest.approx(1.0 - 0.010)  # up to the latest sample less the margin


def test_malformed_and_foreign_messages_are_counted_never_raised(pub):
    src = source(pub, stream="probeA")
    try:
        good = spike("Electrode 3", 1, 3000, stream="probeA")
        pub.send_multipart([b"\x01", good[1]])  # type frame of one byte
        pub.send_multipart([struct.pack("<H", 0), good[1]])  # says TTL, body is a spike
        pub.send_multipart([good[0], b"{not json"])
        pub.send_multipart([good[0]])  # one frame
        pub.send_multipart(spike("Electrode 3", 1, 3010, stream="NI-DAQ"))  # another stream's clock
        pub.send_multipart(spike("Electrode 3", 1, 3020, stream="probeA", sample_rate=2500.0))  # another rate
        pub.send_multipart(good)
        msgs = take(src, lambda g: of(g, m.SpikeBatch))
        time.sleep(0.2)
        msgs += src.poll(0.1)
    finally:
        src.close()
    assert src.malformed() == 4
    assert src.counters()["foreign_events"] == 2 and src.counters()["stream"] == "probeA"
    assert np.concatenate([b.neuron for b in of(msgs, m.SpikeBatch)]).tolist() == [0]


def test_without_a_stream_named_the_first_stream_heard_is_the_clock(pub):
    src = source(pub)
    try:
        pub.send_multipart(spike("Electrode 3", 1, 3000, stream="probeA"))
        pub.send_multipart(encode_ttl(3000, 2, True, RATE, stream="NI-DAQ"))  # another device's clock
        pub.send_multipart(spike("Electrode 3", 1, 3300, stream="probeA"))
        msgs = take(src, lambda g: sum(len(b.neuron) for b in of(g, m.SpikeBatch)) >= 2)
    finally:
        src.close()
    assert src.counters()["stream"] == "probeA" and src.counters()["foreign_events"] == 1
    assert src.counters()["ttl_events"] == 0 and not of(msgs, m.EventCode)


def test_code_words_and_photodiode_edges_become_event_codes(pub):
    src = source(pub)
    try:
        enc = TtlEncoder(TtlConfig().lines(), 150)
        frames, asked = [], [(20, 3000), (20, 9000), (20, 15000), (30, 15100)]  # the last one is delayed
        for code, s in asked:
            frames += [encode_ttl(t.sample, t.line, t.state, RATE) for t in enc.write(code, s)[1]]
        frames += [
            encode_ttl(3300, 9, True, RATE),
            encode_ttl(9300, 9, False, RATE),
            encode_ttl(9400, 13, True, RATE),
        ]  # line 13: nothing is wired there
        frames.sort(key=lambda f: json.loads(f[1])["sample_number"])
        frames.append(spike("Electrode 3", 1, 30_000))  # the stream moves on: every word is complete
        for f in frames:
            pub.send_multipart(f)
        msgs = take(src, lambda g: len(of(g, m.EventCode)) >= 6)
    finally:
        src.close()
    codes = sorted((e.time_s, e.code) for e in of(msgs, m.EventCode))
    assert codes == [
        (3000 / RATE, 20),
        (3300 / RATE, m.Codes.PHOTODIODE),
        (9000 / RATE, 20),
        (9300 / RATE, m.Codes.PHOTODIODE),
        (15000 / RATE, 20),
        (15300 / RATE, 30),
    ]
    assert all(e.clock == "acquisition" and e.trial_id == -1 and e.index == -1 for e in of(msgs, m.EventCode))
    assert src.counters()["unknown_line_events"] == 1 and src.counters()["unknown_lines"] == [13]


def test_on_the_wall_clock_a_quiet_stream_moves_on_and_a_stopped_one_goes_silent(pub):
    src = source(pub, clock=WallClock(), stale_after_s=0.6)
    try:
        pub.send_multipart(spike("Electrode 3", 1, 60_000))  # sample time 2.0 s
        first = take(src, lambda g: of(g, m.SpikeBatch))
        assert first, "the spike never arrived"
        time.sleep(0.3)
        later = src.poll(0.05)
        # Nothing more came, but the stream's clock has moved on with the wall clock (less the margin).
        hb = of(later, m.Heartbeat)
        assert hb and hb[-1].clock_s > 2.0 + 0.25 - 0.010
        time.sleep(0.5)
        assert of(src.poll(0.05), m.Heartbeat) == []  # nothing for 0.8 s > stale_after_s: no heartbeat
    finally:
        src.close()


def test_an_endpoint_nobody_publishes_on_is_not_described():
    cfg = OpenEphysConfig(units=[[1, 1]])
    src = OpenEphysSource(cfg, TtlConfig(), "tcp://127.0.0.1:1", RATE, VirtualClock())
    try:
        t0 = time.monotonic()
        assert src.describe(0.5) == {}
        assert time.monotonic() - t0 < 2
    finally:
        src.close()


def test_bench_ingest_loses_nothing_through_each_source(tmp_path):
    from bench.ingest import main

    out = tmp_path / "ingest.json"
    main(
        [
            "--sources",
            "native",
            "openephys",
            "--native-spikes",
            "30000",
            "--openephys-spikes",
            "30000",
            "--units",
            "64",
            "--json",
            str(out),
        ]
    )
    rows = {r["source"]: r for r in json.loads(out.read_text())["sources"]}
    for name, n in (("native", 30000), ("openephys", 30000)):
        r = rows[name]
        assert r["spikes_sent"] == r["received"] == n and r["spikes_lost"] == 0
        assert r["codes_sent"] > 0 and r["codes_lost"] == 0
        assert r["spikes_per_cpu_s"] > 0 and r["windows"] > 0  # binned, trial by trial
