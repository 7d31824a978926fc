"""Messages: every type round-trips; malformed frames raise MessageError; receivers count and drop them."""
import json

import numpy as np
import pytest
import zmq

from controller import messages as m
from controller.links import Receiver
from stimulus.images import image_hash


def examples():
    rng = np.random.default_rng(0)
    px = rng.integers(0, 255, (3, 8, 8, 3), dtype=np.uint8)
    h = [image_hash(p) for p in px]
    return [
        m.SpikeBatch(stream="s", seq=4, t_start_s=1.0, t_end_s=1.02, total_spikes=10,
                     neuron=np.array([1, 2, 3], np.uint16), time_s=np.array([1.001, 1.01, 1.019])),
        m.EventCode(stream="p", seq=1, code=m.Codes.IMAGE_ONSET, time_s=3.5, clock="presenter", trial_id=2, index=1,
                    image_hash="abc"),
        m.Heartbeat(role="cortex", seq=9, clock_s=12.0, stream="s"),
        m.ScreenImage(image_hash=h[0], pixels=px[0]),
        m.TrialPlan(trial_id=3, image_hashes=h, fixation_frames=18, on_frames=6, off_frames=6,
                    iti_frames=18, refresh_hz=60.0, model_version=2, source="model", reasons=["x", "y", "z"], pixels=px),
        m.OnsetReport(trial_id=3, index=0, image_hash="a", flip_s=0.5, frame=30),
        m.TrialReport(trial_id=3, status="done", start_s=0.1, end_s=1.7, dropped_frames=0, n_onsets=3,
                      frame_intervals_s=np.full(5, 1 / 60, np.float32)),
        m.ResponsesUpdate(trial_id=3, image_hashes=h[:1], pixels=px[:1], counts=np.ones((1, 4), np.float32)),
        m.ModelRequest(request_id=1, op="predict", pixels=px),
        m.ModelReply(request_id=1, op="predict", model_version=5, rates=np.ones((2, 3, 4), np.float32),
                     info={"k": [1, 2]}),
        m.Shutdown(reason="done"),
    ]


def test_every_message_type_has_an_example():
    assert {type(x).__name__ for x in examples()} == set(m.MESSAGE_TYPES)


@pytest.mark.parametrize("msg", examples(), ids=lambda x: type(x).__name__)
def test_round_trip(msg):
    frames = m.encode(msg)
    assert frames[0] == type(msg).__name__.encode()
    assert json.loads(frames[1])["v"] == m.PROTOCOL_VERSION
    back = m.decode([bytes(f) for f in frames])
    assert type(back) is type(msg)
    for name, value in vars(msg).items():
        got = getattr(back, name)
        if isinstance(value, np.ndarray):
            assert got.dtype == value.dtype and got.shape == value.shape
            np.testing.assert_array_equal(got, value)
        else:
            assert got == value


def _frames(msg):
    return [bytes(f) for f in m.encode(msg)]


def _header(frames):
    return json.loads(frames[1])


def _with_header(frames, header):
    return [frames[0], json.dumps(header).encode(), *frames[2:]]


def spike_frames():
    return _frames(examples()[0])


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f[:1], "at least 2"),
    (lambda f: [b"Nonsense", *f[1:]], "unknown message type"),
    (lambda f: [b"\xff\xfe", *f[1:]], "not ASCII"),
    (lambda f: [f[0], b"{not json", *f[2:]], "not JSON"),
    (lambda f: _with_header(f, {**_header(f), "v": 99}), "protocol version 99"),
    (lambda f: _with_header(f, {**_header(f), "fields": {k: v for k, v in _header(f)["fields"].items() if k != "seq"}}),
     "missing field 'seq'"),
    (lambda f: _with_header(f, {**_header(f), "fields": {**_header(f)["fields"], "seq": "four"}}), "SpikeBatch.seq"),
    (lambda f: _with_header(f, {**_header(f), "fields": {**_header(f)["fields"], "extra": 1}}), "unknown field"),
    (lambda f: f[:3], "expected 4 frames"),
    (lambda f: [*f[:2], f[2][:-2], f[3]], "bytes"),
    (lambda f: _with_header(f, {**_header(f), "arrays": [["neuron", "<f8", [3]], _header(f)["arrays"][1]]}), "dtype"),
    (lambda f: _with_header(f, {**_header(f), "arrays": [["neuron", "<u2", [-3]], _header(f)["arrays"][1]]}), "bad shape"),
])
def test_malformed_frames_raise_clear_errors(mutate, message):
    with pytest.raises(m.MessageError, match=message):
        m.decode(mutate(spike_frames()))


def test_receiver_counts_and_drops_malformed_over_a_real_socket():
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    port = b.bind_to_random_port("tcp://127.0.0.1")
    a.connect(f"tcp://127.0.0.1:{port}")
    try:
        a.send_multipart([b"SpikeBatch", b"garbage"])
        a.send_multipart([b"Whatever"])
        m.send(a, examples()[2])
        recv = Receiver(b)
        got = []
        for _ in range(50):
            if b.poll(100):
                msg = recv.recv()
                if msg is not None:
                    got.append(msg)
            if got:
                break
        assert recv.malformed == 2
        assert isinstance(got[0], m.Heartbeat) and got[0].clock_s == 12.0
    finally:
        a.close(0)
        b.close(0)
        ctx.term()
