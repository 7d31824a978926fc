"""The Open Ephys source against what a real GUI sends around the JSON format: the Spike Sorter's unit numbers,
other TTL channels, float32 rates, null amplitudes, a word's lines split across polls and late, and the plugin's
other output formats. A plain pyzmq PUB publishes messages written as the plugin writes them."""

import struct
import time

import numpy as np
import pytest
import zmq

from acquisition.config import OpenEphysConfig, TtlConfig
from acquisition.openephys import UnitLayout, encode_spikes, encode_ttl, other_format
from acquisition.openephys_source import OTHER_FORMAT_EVIDENCE, RATE_EVIDENCE, OpenEphysSource
from acquisition.ttl import TtlEncoder
from contract import messages as m
from contract.parts import SessionAbort
from controller.clocks import VirtualClock

RATE = 3333.33  # float32 cannot hold it: the plugin sends 3333.330078125


@pytest.fixture
def pub():
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 0)  # before bind: a burst beyond ZeroMQ's default queue of 1,000 would be dropped
    sock.bind("tcp://127.0.0.1:*")
    yield sock
    sock.close(0)


def open_source(pub, rate=RATE, **cfg):
    cfg = OpenEphysConfig(**{"units": UnitLayout(units_per_electrode=2).units(4), "clock_margin_ms": 10.0, **cfg})
    src = OpenEphysSource(
        cfg, TtlConfig(photodiode_line=9), pub.getsockopt_string(zmq.LAST_ENDPOINT), rate, VirtualClock()
    )
    assert src.describe(5.0)["n_neurons"] == len(cfg.units)
    return src


def spikes(neuron, sample, rate=RATE, **kw):
    return encode_spikes(np.asarray(neuron), np.asarray(sample) / rate, rate, layout=UnitLayout(2), **kw)


def send_and_poll(pub, src, frames, until=lambda got: False, timeout_s=5.0):
    """Send, then poll until `until(messages)` or, if it never holds, for timeout_s."""
    for f in frames:
        pub.send_multipart(f)
    got, end = [], time.monotonic() + timeout_s
    while time.monotonic() < end:
        got += src.poll(0.05)
        if until(got):
            break
    return got


def spike_count(got):
    return sum(len(b.neuron) for b in got if isinstance(b, m.SpikeBatch))


def codes(got):
    return [(e.code, round(e.time_s * RATE)) for e in got if isinstance(e, m.EventCode)]


def test_units_numbered_by_one_counter_map_and_a_per_electrode_map_is_counted_unknown(pub):
    src = open_source(pub)
    try:
        # The GUI's names: Electrode 1 holds units 1, 2; Electrode 2 units 3, 4.
        frames = spikes([0, 1, 2, 3], [100, 200, 300, 400])
        frames += [encode_spikes(np.array([0]), np.array([500 / RATE]), RATE)[0]]  # ("Electrode 1", 1) again
        per_electrode = encode_spikes(np.array([2]), np.array([600 / RATE]), RATE, layout=UnitLayout(2))[0]
        frames.append(per_electrode[:1] + [per_electrode[1].replace(b'"sorted_id": 3', b'"sorted_id": 1')])
        got = send_and_poll(pub, src, frames, lambda g: spike_count(g) >= 5)
    finally:
        src.close()
    assert np.concatenate([b.neuron for b in got if isinstance(b, m.SpikeBatch)]).tolist() == [0, 1, 2, 3, 0]
    assert src.counters()["unknown_unit_spikes"] == 1 and ["Electrode 2", 1, 1] in src.counters()["unknown_units"]


def test_code_words_come_only_from_the_named_ttl_channel(pub):
    src = open_source(pub, ttl_channel="Digital Inputs")
    try:
        enc = TtlEncoder(TtlConfig().lines(), 10)
        frames = []
        for code, at in ((5, 1000), (5, 1100)):  # a repeat: both words are kept
            frames += [
                encode_ttl(t.sample, t.line, t.state, RATE, channel_name="Digital Inputs")
                for t in enc.write(code, at)[1]
            ]
            # Another processor's TTL channel pulses line 0 on the same stream, between the words' edges.
            frames += [encode_ttl(at + 3, 0, s, RATE, channel_name="Crossing Detector") for s in (True, False)]
        frames.sort(key=lambda f: int(f[1].split(b'"sample_number": ')[1].split(b",")[0]))
        frames += spikes([0], [5000])  # the stream moves on
        got = send_and_poll(pub, src, frames, lambda g: len(codes(g)) >= 2 and spike_count(g))
        time.sleep(0.1)
        got += src.poll(0.05)
    finally:
        src.close()
    assert codes(got) == [(5, 1000), (5, 1100)]  # no spurious code 1 or 4 from the other channel's line 0
    c = src.counters()
    assert c["ttl_channel"] == "Digital Inputs" and c["other_channel_ttl_events"] == 4
    assert c["other_ttl_channels"] == [["virtual_cortex", "Crossing Detector", 4]] and c["words"] == 2


def test_without_a_channel_named_the_first_ttl_channel_heard_carries_the_codes(pub):
    src = open_source(pub)
    try:
        frames = [encode_ttl(1000, 2, True, RATE, channel_name="A"), encode_ttl(1001, 0, True, RATE, channel_name="B")]
        frames += [encode_ttl(1010, 2, False, RATE, channel_name="A")] + spikes([0], [5000])
        got = send_and_poll(pub, src, frames, lambda g: codes(g) and spike_count(g))
    finally:
        src.close()
    assert codes(got) == [(4, 1000)] and src.counters()["ttl_channel"] == "A"


@pytest.mark.parametrize("style", ["juce6", "juce8"])
def test_a_float32_rate_is_the_rigs_rate(pub, style):
    src = open_source(pub)
    try:
        frames = spikes([0, 3], [3333, 6666], style=style)
        assert b'"sample_rate": 3333.330078125' in frames[0][1]
        got = send_and_poll(pub, src, frames, lambda g: spike_count(g) >= 2)
    finally:
        src.close()
    times = np.concatenate([b.time_s for b in got if isinstance(b, m.SpikeBatch)])
    assert times.tolist() == [3333 / RATE, 6666 / RATE] and src.counters()["foreign_events"] == 0


def test_a_stream_at_another_rate_ends_the_session_naming_both_rates(pub):
    src = open_source(pub, rate=30000.0, stream="Rhythm Data")
    try:
        frames = spikes([0] * RATE_EVIDENCE, np.arange(RATE_EVIDENCE) * 10, stream="Rhythm Data")
        with pytest.raises(SessionAbort) as err:
            send_and_poll(pub, src, frames)
    finally:
        src.close()
    text = str(err.value)
    assert "'Rhythm Data' at 3333.330078 Hz" in text and "acquisition_sample_rate_hz = 30000 Hz" in text


def test_another_streams_rate_is_counted_not_fatal_once_the_clock_stream_is_heard(pub):
    src = open_source(pub, rate=30000.0)
    try:
        good = encode_spikes(np.array([0]), np.array([0.1]), 30000.0, stream="probe")
        other = spikes([0] * (2 * RATE_EVIDENCE), np.arange(2 * RATE_EVIDENCE), stream="NI-DAQ")
        got = send_and_poll(pub, src, good + other + spikes([0], [30000], stream="NI-DAQ"), timeout_s=1.0)
    finally:
        src.close()
    assert spike_count(got) == 1 and src.counters()["foreign_events"] == 2 * RATE_EVIDENCE + 1


def test_a_spike_with_a_null_amplitude_is_kept_and_counted(pub):
    src = open_source(pub)
    try:
        amps = np.full((4, 4), 30.0)
        amps[1, 2] = np.inf
        frames = spikes([0, 1, 1], [10, 20, 30], amplitudes_uv=amps)
        assert b'"amp3": null' in frames[1][1]
        got = send_and_poll(pub, src, frames, lambda g: spike_count(g) >= 3)
    finally:
        src.close()
    assert spike_count(got) == 3
    assert src.counters()["nonfinite_amplitude_spikes"] == 2 and src.malformed() == 0


def test_a_words_lines_split_across_polls_and_late_make_one_word(pub):
    """The lines of a word (one sample) arrive in separate polls, each after spikes far past the word and the
    margin: the word is given out once, whole, when a TTL of a later sample shows all its lines are in."""
    src = open_source(pub)
    try:
        got = []
        lines = [t for t in TtlEncoder(TtlConfig().lines(), 10).write(0b10110, 1000)[1]]  # lines 1, 2, 4
        rising, falling = [t for t in lines if t.state], [t for t in lines if not t.state]
        late = 1000 + int(0.3 * RATE)  # every line 300 ms behind the stream's spikes
        for k, t in enumerate(rising):
            got += send_and_poll(
                pub,
                src,
                spikes([0], [late + 100 * k]) + [encode_ttl(t.sample, t.line, t.state, RATE)],
                lambda g: spike_count(g) > 0 and src.counters()["ttl_events"] > k,
            )
            assert codes(got) == [], "a word given out before all its lines were in"
        got += send_and_poll(
            pub, src, [encode_ttl(t.sample, t.line, t.state, RATE) for t in falling], lambda g: codes(g)
        )
    finally:
        src.close()
    assert codes(got) == [(0b10110, 1000)] and src.counters()["words"] == 1


def raw_binary_ttl(sample: int) -> list[bytes]:
    """GUI 0.6+/1.0's Raw Binary output of a TTL event: the type frame, then the event serialized (a processor
    event, TTL; node, stream, channel; sample number; timestamp; line, state, the TTL word)."""
    body = struct.pack("<BBHHHqd", 1, 3, 100, 0, 0, sample, sample / 30000.0) + struct.pack("<BBQ", 2, 1, 4)
    return [struct.pack("<H", 0), body]


def raw_binary_spike(sample: int) -> list[bytes]:
    body = struct.pack("<BBHHHqdH", 2, 1, 100, 0, 0, sample, sample / 30000.0, 1) + bytes(4 * 4 + 4 * 40 * 4)
    return [struct.pack("<H", 1), body]


V05_RAW = [struct.pack("<H", 2), struct.pack("<d", 1.25), bytes(40)]
V05_HEADER = [b"spike/sortedid:1/id:100_0/ts:37500"]
V05_HEADER_JSON = [b"ttl/channel:2/state:1/id:100_0/ts:37500", b'{"type": "ttl", "timing": {"timestamp": 37500}}']


@pytest.mark.parametrize(
    "frames, says",
    [
        ([raw_binary_ttl(100 * k) for k in range(3)], "Raw Binary output of the Event Broadcaster"),
        ([raw_binary_spike(100 * k) for k in range(3)], "Raw Binary output of the Event Broadcaster"),
        ([V05_RAW] * 3, "Open Ephys GUI 0.5.x (three frames)"),
        ([V05_HEADER] * 3, "Header only output of the Event Broadcaster for Open Ephys GUI 0.5.x"),
        ([V05_HEADER_JSON] * 3, "Header/JSON output"),
    ],
)
def test_another_output_format_ends_the_session_saying_which_setting_to_change(pub, frames, says):
    assert all(other_format(f) for f in frames) and len(frames) == OTHER_FORMAT_EVIDENCE
    src = open_source(pub)
    try:
        with pytest.raises(SessionAbort) as err:
            send_and_poll(pub, src, frames)
    finally:
        src.close()
    assert says in str(err.value)
    assert "Format to JSON" in str(err.value) and src.counters()["other_format_messages"] == OTHER_FORMAT_EVIDENCE


def test_a_malformed_json_message_is_not_taken_for_another_format():
    good = encode_ttl(10, 1, True)
    assert other_format(good) is None and other_format([good[0], b"{not json"]) is None
    assert other_format([good[0]]) is None and other_format("frames") is None


def test_a_map_that_misses_most_units_is_said_to_be_wrong(pub, caplog):
    src = open_source(pub, units=[["Electrode 1", 1], ["Electrode 2", 1]])  # numbered per electrode
    try:
        n = 1600
        frames = spikes(np.arange(n) % 4, np.arange(n))  # GUI numbering: only ("Electrode 1", 1) is mapped
        with caplog.at_level("WARNING", logger="cortexloop.openephys"):
            got = send_and_poll(pub, src, frames, lambda g: spike_count(g) >= n // 4)
    finally:
        src.close()
    assert spike_count(got) == n // 4
    assert any(
        "most sorted spikes come from units not in [cortex.openephys] units" in r.message for r in caplog.records
    )
    assert "('Electrode 1', 2)" in caplog.text and "one counter over all electrodes" in caplog.text
