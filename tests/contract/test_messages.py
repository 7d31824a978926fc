"""Messages: every type round-trips; malformed frames raise MessageError; receivers count and drop them."""

import json

import numpy as np
import pytest
import zmq

from contract import messages as m
from contract.images import image_hash
from tests.helpers import encode_frames, examples
from transport.links import Receiver


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


def _header(frames):
    return json.loads(frames[1])


def _with_header(frames, header):
    return [frames[0], json.dumps(header).encode(), *frames[2:]]


def spike_frames():
    return encode_frames(examples()[0])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f[:1], "at least 2"),
        (lambda f: [b"Nonsense", *f[1:]], "unknown message type"),
        (lambda f: [b"\xff\xfe", *f[1:]], "not ASCII"),
        (lambda f: [f[0], b"{not json", *f[2:]], "not JSON"),
        (lambda f: _with_header(f, {**_header(f), "v": 99}), "protocol version 99"),
        (
            lambda f: _with_header(
                f, {**_header(f), "fields": {k: v for k, v in _header(f)["fields"].items() if k != "seq"}}
            ),
            "missing field 'seq'",
        ),
        (
            lambda f: _with_header(f, {**_header(f), "fields": {**_header(f)["fields"], "seq": "four"}}),
            "SpikeBatch.seq",
        ),
        (lambda f: _with_header(f, {**_header(f), "fields": {**_header(f)["fields"], "extra": 1}}), "unknown field"),
        (lambda f: f[:3], "expected 4 frames"),
        (lambda f: [*f[:2], f[2][:-2], f[3]], "bytes"),
        (
            lambda f: _with_header(f, {**_header(f), "arrays": [["neuron", "<f8", [3]], _header(f)["arrays"][1]]}),
            "dtype",
        ),
        (
            lambda f: _with_header(f, {**_header(f), "arrays": [["neuron", "<u2", [-3]], _header(f)["arrays"][1]]}),
            "bad shape",
        ),
    ],
)
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


# -- every cause of a crash found by fuzzing, each now a MessageError -------------------------------------------
def _spike_header(**arrays):
    frames = spike_frames()
    h = _header(frames)
    h["arrays"] = [arrays.get("neuron", h["arrays"][0]), arrays.get("time_s", h["arrays"][1])]
    return frames, h


@pytest.mark.parametrize(
    "neuron_desc, buffer, message",
    [
        (["neuron", "<u2", [2**64]], b"", "bad shape"),  # was OverflowError
        (["neuron", "<u2", [2**32, 2**32]], b"", "bad shape"),  # int64 size product wrapped to 0 bytes
        (["neuron", "<u2", [1] * 65], b"\0\0", "bad shape"),  # numpy's 64-dimension limit (ValueError)
        (["neuron", "<u2", [True]], b"\0\0", "bad shape"),  # was TypeError
        (["neuron", ",u2", [1]], b"\0\0", "dtype"),  # numpy's dtype parser raised SyntaxError
        (["neuron", "(2)u1", [1]], b"\0\0", "dtype"),  # an equal dtype spelled differently is refused too
        (["neuron", "<u2", []], b"\0\0", "bad shape"),  # a 0-d neuron array made len() fail downstream
    ],
)
def test_array_descriptions_that_crashed_the_decoder(neuron_desc, buffer, message):
    frames, h = _spike_header(neuron=neuron_desc, time_s=["time_s", "<f8", [len(buffer) // 2]])
    with pytest.raises(m.MessageError, match=message):
        m.decode([frames[0], json.dumps(h).encode(), buffer, b"\0" * 8 * (len(buffer) // 2)])


def test_deeply_nested_header_is_a_message_error():
    deep = b'{"v":1,"fields":{"role":"x","seq":1,"clock_s":1.0,"info":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    with pytest.raises(m.MessageError, match="nested too deeply"):  # was RecursionError
        m.decode([b"Heartbeat", deep])
    nested = {"a": 1}
    for _ in range(m.MAX_JSON_DEPTH + 1):
        nested = {"a": nested}
    with pytest.raises(m.MessageError, match="nested deeper"):  # parses, but is refused before it reaches the store
        m.decode(encode_frames(m.Heartbeat(role="presenter", seq=1, clock_s=1.0, info=nested)))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("seq", 2**63, "64 bits"),  # SQLite's INTEGER overflowed in the store
        ("t_end_s", 10**400, "does not fit a float"),  # an integer too large for a float (OverflowError)
        ("t_start_s", float("nan"), "not finite"),  # NaN in a NOT NULL REAL column: IntegrityError in the store
        ("t_end_s", float("inf"), "not finite"),
        ("seq", True, "expected int"),
        ("stream", "\ud800", "surrogate"),  # a lone surrogate cannot be stored as UTF-8
        ("t_start_s", 5.0, "before t_start_s"),
        ("total_spikes", 2, r"not an integer in \[3,"),  # fewer in total than in this batch
    ],
)
def test_field_values_that_would_crash_a_receiver(field, value, message):
    frames = spike_frames()
    h = _header(frames)
    h["fields"][field] = value
    with pytest.raises(m.MessageError, match=message):
        m.decode([frames[0], json.dumps(h).encode(), *frames[2:]])


def test_integer_beyond_the_json_digit_limit_is_a_message_error():
    frames = spike_frames()
    text = frames[1].decode().replace('"seq":4', '"seq":' + "9" * 4400)  # Python refuses over 4,300 digits
    with pytest.raises(m.MessageError, match="not JSON"):
        m.decode([frames[0], text.encode(), *frames[2:]])


def _replace(msg, **changes):
    """Encode a message with some fields changed, bypassing the dataclass."""
    frames = encode_frames(msg)
    h = _header(frames)
    h["fields"].update(changes)
    return [frames[0], json.dumps(h).encode(), *frames[2:]]


def by_type(name):
    return next(x for x in examples() if type(x).__name__ == name)


@pytest.mark.parametrize(
    "frames, message",
    [
        # the presenter built an 8 GB frame list from this
        (lambda: _replace(by_type("TrialPlan"), fixation_frames=10**9), "fixation_frames"),
        (lambda: _replace(by_type("TrialPlan"), on_frames=0), "on_frames"),
        (lambda: _replace(by_type("TrialPlan"), refresh_hz=0.0), "refresh_hz"),
        # hashes and pixels disagree: the presenter died on the count, or cached the wrong pixels under a hash
        (lambda: _replace(by_type("TrialPlan"), image_hashes=["a", "b", "c"]), "not the hash of its pixels"),
        (
            lambda: _replace(
                by_type("TrialPlan"), image_hashes=by_type("TrialPlan").image_hashes[:2], reasons=["x", "y"]
            ),
            "lengths disagree",
        ),
        (lambda: _replace(by_type("TrialPlan"), reasons=["x"]), "lengths disagree"),
        (lambda: _replace(by_type("ScreenImage"), image_hash="white"), "not the hash of its pixels"),
        (lambda: _replace(by_type("ResponsesUpdate"), image_hashes=[]), "lengths disagree"),
        # a plan for a million images killed the model worker
        (lambda: _replace(by_type("ModelRequest"), op="plan", n_images=10**6), "n_images"),
        (lambda: _replace(by_type("ModelRequest"), op="train"), "op"),
        (lambda: _replace(by_type("ModelRequest"), train_steps=10**12), "train_steps"),
        # a heartbeat at clock inf marked every response window complete
        (lambda: _replace(by_type("Heartbeat"), clock_s=float("inf")), "not finite"),
        (lambda: _replace(by_type("Heartbeat"), clock_s=1e300), "finite time"),
        (lambda: _replace(by_type("Heartbeat"), role=""), "role"),
        (lambda: _replace(by_type("EventCode"), clock="mine"), "clock"),
        (lambda: _replace(by_type("EventCode"), code=-1), "code"),
        (lambda: _replace(by_type("TrialReport"), status="exploded"), "status"),
        (lambda: _replace(by_type("TrialReport"), end_s=0.0), "before start_s"),
        (lambda: _replace(by_type("TrialReport"), dropped_frames=-1), "dropped_frames"),
        (lambda: _replace(by_type("OnsetReport"), index=10**6), "index"),
    ],
)
def test_messages_that_decoded_but_killed_a_process_are_refused(frames, message):
    with pytest.raises(m.MessageError, match=message):
        m.decode(frames())


def _with_array(msg, name, array):
    """Encode msg with one array replaced (any dtype-compatible shape), bypassing validation."""
    setattr(msg, name, array)
    return encode_frames(msg)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: _with_array(by_type("SpikeBatch"), "time_s", np.array([1.0, 2.0])), "lengths disagree"),
        (lambda: _with_array(by_type("SpikeBatch"), "time_s", np.array([1.0, np.nan, 2.0])), "NaN"),
        (lambda: _with_array(by_type("TrialReport"), "frame_intervals_s", np.array([np.inf], np.float32)), "NaN"),
        (lambda: _with_array(by_type("ResponsesUpdate"), "counts", np.full((1, 4), np.nan, np.float32)), "NaN"),
        (lambda: _with_array(by_type("ResponsesUpdate"), "counts", -np.ones((1, 4), np.float32)), "negative"),
        (lambda: _with_array(by_type("ResponsesUpdate"), "counts", np.ones((2, 4), np.float32)), "lengths disagree"),
        (lambda: _with_array(by_type("ResponsesUpdate"), "counts", np.ones(4, np.float32)), "rank 1"),
        (lambda: _with_array(by_type("ModelRequest"), "pixels", np.zeros((2, 8, 8), np.uint8)), "bad shape"),
        (lambda: _with_array(by_type("ModelRequest"), "pixels", np.zeros((2, 8, 8, 2), np.uint8)), "image shape"),
        (lambda: _with_array(by_type("ScreenImage"), "pixels", np.zeros(0, np.uint8)), "no image"),
        (lambda: _with_array(by_type("ModelReply"), "rates", np.zeros((2, 3), np.float32)), "bad shape"),
    ],
)
def test_arrays_of_the_wrong_shape_or_values_are_refused(make, message):
    with pytest.raises(m.MessageError, match=message):
        m.decode(make())


def test_context_checks_need_the_rig():
    batch = m.SpikeBatch(
        stream="s",
        seq=0,
        t_start_s=0.0,
        t_end_s=1.0,
        total_spikes=1,
        neuron=np.array([7], np.uint16),
        time_s=np.array([0.5]),
    )
    m.check_context(batch, n_neurons=8)
    with pytest.raises(m.MessageError, match="index 7 for a rig of 7 neurons"):
        m.check_context(batch, n_neurons=7)
    update = by_type("ResponsesUpdate")  # counts (1, 4), images 8x8x3
    m.check_context(update, n_neurons=4, image_shape=(8, 8, 3))
    with pytest.raises(m.MessageError, match=r"expected \(n, 5\)"):
        m.check_context(update, n_neurons=5)
    request = by_type("ModelRequest")  # a predict request of 8x8x3 images
    with pytest.raises(m.MessageError, match=r"the rig's are \(32, 32, 3\)"):
        m.check_context(request, image_shape=(32, 32, 3))
    with pytest.raises(m.MessageError, match="expected"):
        m.check_context(by_type("ModelReply"), n_neurons=3)  # rates (2, 3, 4)
    # A heartbeat claiming to be the cortex on the presenter's socket would hide a dead cortex.
    with pytest.raises(m.MessageError, match="not expected here"):
        m.check_context(by_type("Heartbeat"), roles=("presenter",))
    m.check_context(by_type("Heartbeat"), roles=("cortex",))


def test_receiver_applies_context_checks_and_survives_anything_decode_refuses():
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PUSH), ctx.socket(zmq.PULL)
    port = b.bind_to_random_port("tcp://127.0.0.1")
    a.connect(f"tcp://127.0.0.1:{port}")
    try:
        recv = Receiver(b, context={"roles": ("presenter",), "n_neurons": 4})
        a.send_multipart(encode_frames(m.Heartbeat(role="cortex", seq=1, clock_s=1.0)))  # wrong role for this socket
        a.send_multipart([b"Heartbeat", b'{"v":1,"fields":' + b"[" * 50_000])  # deep nesting
        a.send_multipart(_replace(by_type("TrialPlan"), fixation_frames=10**9))
        m.send(a, m.Heartbeat(role="presenter", seq=2, clock_s=2.0))
        got = None
        while got is None:
            assert b.poll(5000)
            got = recv.recv()
        assert recv.malformed == 3 and got.seq == 2
        assert "fixation_frames" in recv.last_error
    finally:
        a.close(0)
        b.close(0)
        ctx.term()


# -- socket limits -----------------------------------------------------------------------------------------------
def test_a_frame_over_the_size_limit_disconnects_its_sender_and_the_receiver_carries_on():
    from zmq.utils.monitor import recv_monitor_message

    from transport.links import limit_socket

    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    limit_socket(pull, max_bytes=4096, hwm=100)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    monitor = pull.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    push.connect(f"tcp://127.0.0.1:{port}")
    recv = Receiver(pull)
    try:
        push.send_multipart([b"Heartbeat", b"x" * 10_000_000])  # junk: ZeroMQ refuses it before buffering it
        assert monitor.poll(5000), "the oversized sender was not disconnected"
        assert recv_monitor_message(monitor)["event"] == zmq.EVENT_DISCONNECTED
        # Frames each under the limit pass (ZeroMQ's limit is per frame), and the sender, reconnected, is heard.
        got = None
        for _ in range(100):
            try:
                m.send(push, m.Heartbeat(role="presenter", seq=1, clock_s=1.0, info={"pad": "y" * 3000}), zmq.NOBLOCK)
            except zmq.Again:
                pass
            if pull.poll(100) and (got := recv.recv()) is not None:
                break
        assert got is not None and got.info["pad"] == "y" * 3000
        assert recv.malformed == 0  # the oversized message never reached the decoder
    finally:
        for s in (pull, push, monitor):
            s.close(0)
        ctx.term()


def test_high_water_marks_bound_the_queue():
    from transport.links import limit_socket

    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    for s in (pull, push):
        limit_socket(s, max_bytes=1 << 20, hwm=5)
    pull.bind("inproc://hwm")
    push.connect("inproc://hwm")
    try:
        queued = 0
        while True:
            try:
                m.send(push, m.Shutdown("x"), zmq.NOBLOCK)
                queued += 1
            except zmq.Again:
                break
            assert queued < 1000, "no high-water mark"
        assert queued == 10  # 5 at the sender, 5 at the receiver; then the sender is told to wait
    finally:
        pull.close(0)
        push.close(0)
        ctx.term()


def test_socket_limits_admit_the_largest_valid_message_of_each_socket():
    from transport.links import ENDPOINT_NAMES, socket_limits

    shape, per_trial, neurons, held_out, members = (64, 64, 3), 20, 50, 300, 4
    limits = {
        name: socket_limits(
            name,
            image_shape=shape,
            images_per_trial=per_trial,
            n_neurons=neurons,
            predict_images=held_out,
            ensemble_size=members,
        )
        for name in ENDPOINT_NAMES
    }
    px = np.random.default_rng(0).integers(0, 255, (held_out, *shape), dtype=np.uint8)
    hashes = [image_hash(p) for p in px[:per_trial]]
    largest = {
        "presenter_plans": m.TrialPlan(
            trial_id=1,
            image_hashes=hashes,
            fixation_frames=1,
            on_frames=1,
            off_frames=1,
            iti_frames=1,
            refresh_hz=60.0,
            model_version=1,
            source="model",
            reasons=["r" * 200] * per_trial,
            pixels=px[:per_trial],
        ),
        "acquisition_events": m.ScreenImage(image_hash=hashes[0], pixels=px[0]),
        "model": m.ModelRequest(request_id=1, op="predict", pixels=px),
    }
    rates = m.ModelReply(
        request_id=1, op="predict", model_version=1, rates=np.zeros((members, held_out, neurons), np.float32)
    )
    for name, msg in [*largest.items(), ("model", rates)]:
        max_bytes, hwm = limits[name]
        assert max(memoryview(f).nbytes for f in m.encode(msg)) <= max_bytes, name
        assert hwm >= 16
    with pytest.raises(ValueError, match="unknown socket"):
        socket_limits("nowhere", image_shape=shape, images_per_trial=1, n_neurons=1, predict_images=1, ensemble_size=1)
