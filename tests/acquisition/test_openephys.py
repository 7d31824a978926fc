"""Open Ephys Event Broadcaster format, checked through real pyzmq sockets and a plain json reader."""

import json
import struct
import time

import numpy as np
import pytest
import zmq

from acquisition.openephys import (
    OpenEphysFormatError,
    UnitLayout,
    WordDecoder,
    decode_message,
    encode_spikes,
    encode_ttl,
    encode_word,
    spikes_from_messages,
)

SPIKE_KEYS = {
    "event_type",
    "stream",
    "source_node",
    "electrode",
    "num_channels",
    "sample_rate",
    "sample_number",
    "sorted_id",
}
TTL_KEYS = {"event_type", "stream", "source_node", "sample_rate", "channel_name", "sample_number", "line", "state"}


def pubsub(endpoint):
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.bind(endpoint)
    sub = ctx.socket(zmq.SUB)
    sub.connect(pub.getsockopt_string(zmq.LAST_ENDPOINT))
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    # Slow joiner: send probes until the subscriber hears one.
    for _ in range(200):
        pub.send_multipart(encode_ttl(0, 7, False))
        if sub.poll(20):
            while sub.poll(50):
                sub.recv_multipart()
            return pub, sub
    raise RuntimeError("subscriber never connected")


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:*", "ipc"])
def test_spikes_and_ttl_through_real_sockets_read_by_plain_json(endpoint, tmp_path):
    if endpoint == "ipc":
        endpoint = f"ipc://{tmp_path}/oe.sock"
    pub, sub = pubsub(endpoint)
    try:
        layout = UnitLayout(units_per_electrode=2)
        neuron = np.array([0, 3, 1, 2, 3], np.uint16)
        t = np.array([0.1, 0.10005, 0.2, 0.5, 1.25])
        for msg in encode_spikes(neuron, t, 30000.0, layout=layout, num_channels=4):
            pub.send_multipart(msg)
        for msg in encode_word(0b101, 0, 1.5, n_lines=4):
            pub.send_multipart(msg)
        received = []
        deadline = time.monotonic() + 5
        while len(received) < 7 and time.monotonic() < deadline:
            if sub.poll(100):
                received.append(sub.recv_multipart())
    finally:
        pub.close(0)
        sub.close(0)
    assert len(received) == 7
    spikes, ttls = [], []
    for frames in received:
        assert len(frames) == 2
        (kind,) = struct.unpack("<H", frames[0])  # a plain reader: uint16 then JSON
        body = json.loads(frames[1])
        (spikes if kind == 1 else ttls).append(body)
    assert len(spikes) == 5 and len(ttls) == 2
    for b in spikes:
        assert SPIKE_KEYS <= set(b) and b["event_type"] == "spike"
        assert all(f"amp{c}" in b for c in range(1, b["num_channels"] + 1))
    assert [b["sample_number"] for b in spikes] == [3000, 3002, 6000, 15000, 37500]
    # Named as the GUI's Spike Sorter numbers units: one counter over all electrodes.
    assert [(b["electrode"], b["sorted_id"]) for b in spikes][:2] == [("Electrode 1", 1), ("Electrode 2", 4)]
    for b in ttls:
        assert TTL_KEYS <= set(b) and b["event_type"] == "ttl" and b["state"] is True
    assert sorted(b["line"] for b in ttls) == [0, 2]
    # And our own decoders give back what went in.
    bodies = [decode_message(f) for f in received]
    n_back, t_back, skipped = spikes_from_messages(bodies, layout)
    assert skipped == 0 and np.array_equal(n_back, neuron) and np.allclose(t_back, t, atol=1 / 30000)
    assert WordDecoder(4).feed([b for b in bodies if b["event_type"] == "ttl"]) == [(45000, 0b101)]


def test_malformed_messages_are_refused():
    good = encode_ttl(10, 1, True)
    assert decode_message(good)["line"] == 1
    with pytest.raises(OpenEphysFormatError):
        decode_message([good[0]])
    with pytest.raises(OpenEphysFormatError):
        decode_message([b"\x01", good[1]])
    with pytest.raises(OpenEphysFormatError):
        decode_message([struct.pack("<H", 1), good[1]])  # type says spike, body is a TTL
    with pytest.raises(OpenEphysFormatError):
        decode_message([good[0], b"{not json"])
    spike = encode_spikes(np.array([0]), np.array([0.5]))[0]
    body = json.loads(spike[1])
    del body["amp2"]
    with pytest.raises(OpenEphysFormatError):
        decode_message([spike[0], json.dumps(body).encode()])


def test_unsorted_and_foreign_units_are_skipped():
    layout = UnitLayout(units_per_electrode=1)
    bodies = [decode_message(m) for m in encode_spikes(np.array([0, 1]), np.array([0.1, 0.2]))]
    bodies.append({**bodies[0], "sorted_id": 0})
    bodies.append({**bodies[0], "electrode": "Tetrode 3"})
    n, t, skipped = spikes_from_messages(bodies, layout)
    assert list(n) == [0, 1] and skipped == 2


# -- each input that made the decoder raise something else, now its format error or a skipped unit ----------------
def _spike_body(**changes):
    kind, body = encode_spikes(np.array([0]), np.array([0.5]), num_channels=2)[0]
    return [kind, json.dumps({**json.loads(body), **changes}).encode()]


@pytest.mark.parametrize(
    "frames, message",
    [
        ([struct.pack("<H", 1), b"[" * 100_000 + b"]" * 100_000], "nested too deeply"),  # was RecursionError
        ([struct.pack("<H", 0), b'{"sample_number": ' + b"9" * 4400 + b"}"], "not JSON"),  # was a plain ValueError
        (_spike_body(sample_rate=0), "sample_rate"),  # was ZeroDivisionError in spikes_from_messages
        (_spike_body(sample_rate=float("nan")), "sample_rate"),
        (_spike_body(sample_rate=1e-300), "sample_rate"),  # times would be infinite
        (_spike_body(sample_number=10**400), "sample_number"),  # was OverflowError (int / float)
        (_spike_body(num_channels=10**18), "num_channels"),  # a loop over 10^18 channels
        (_spike_body(stream="x" * 10_000), "stream"),
        ([struct.pack("<H", 1), b" " * (2 << 20)], "body of"),
        ([struct.pack("<H", 0), 5], "not bytes"),
        ("frames", "must be a list"),
    ],
)
def test_inputs_that_crashed_the_decoder_are_format_errors(frames, message):
    with pytest.raises(OpenEphysFormatError, match=message):
        decode_message(frames)


def test_electrodes_beyond_uint16_and_odd_numbers_are_skipped_not_raised():
    layout = UnitLayout(units_per_electrode=1)
    names = [
        "Electrode 70000",
        "Electrode 65537",
        "Electrode 1_0",
        "Electrode  7",
        "Electrode " + "9" * 200,
        "Electrode ²",
        "Electrode 65536",
        "Electrode 3",
    ]
    # sorted_id k on "Electrode k" (one unit per electrode, numbered by one counter); odd names never match.
    ids = [int(n[10:]) if n[10:].isdecimal() and len(n) < 20 else 1 for n in names]
    bodies = [decode_message(_spike_body(electrode=n, sorted_id=u)) for n, u in zip(names, ids)]
    neuron, t, skipped = spikes_from_messages(bodies, layout)  # was OverflowError converting to uint16
    assert list(neuron) == [65535, 2] and skipped == len(names) - 2
    assert np.allclose(t, 0.5)


# -- the short path for well-formed messages accepts exactly what the full check accepts ----------------------------
_ODD_VALUES = [
    None,
    True,
    False,
    0,
    1,
    -1,
    7,
    2**31,
    2**63,
    -(2**63) - 1,
    1.5,
    30000.0,
    float("nan"),
    float("inf"),
    1e-300,
    "",
    "x",
    "spike",
    "ttl",
    "x" * 300,
    "a\x00b",
    [],
    {},
    [1],
]


def _mutations(frames):
    _kind, body = frames[0], json.loads(frames[1])
    yield body
    for key in list(body):
        yield {k: v for k, v in body.items() if k != key}
        for value in _ODD_VALUES:
            yield {**body, key: value}


@pytest.mark.parametrize(
    "frames",
    [encode_spikes(np.array([3]), np.array([0.5]), num_channels=3)[0], encode_ttl(15000, 4, True)],
    ids=["spike", "ttl"],
)
def test_short_path_accepts_only_what_the_full_check_accepts(frames):
    from acquisition.openephys import _SPIKE_FIELDS, _TTL_FIELDS, _check_fields

    name, fields = ("spike", _SPIKE_FIELDS) if frames[0] == struct.pack("<H", 1) else ("ttl", _TTL_FIELDS)
    n_ok = n_refused = 0
    for body in _mutations(frames):
        raw = json.dumps(body, allow_nan=True).encode()
        try:
            _check_fields(name, fields, json.loads(raw))
            full_ok = True
        except OpenEphysFormatError:
            full_ok = False
        try:
            decode_message([frames[0], raw])
            ok = True
        except OpenEphysFormatError:
            ok = False
        assert ok == full_ok, (name, body)
        n_ok, n_refused = n_ok + ok, n_refused + (not ok)
    assert n_ok > 10 and n_refused > 50  # both sides of the line were tried
