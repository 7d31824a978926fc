"""Property-based tests of every decoder and receiving loop: for any input, only the documented error.

- messages.decode raises MessageError and nothing else, for random frames and for valid messages with any
  part of the header or any buffer replaced by arbitrary values; what it returns passes its own validate().
- Valid messages (drawn across the full allowed ranges) always decode, unchanged: validation refuses nothing
  a rig may send.
- The Open Ephys decoder raises OpenEphysFormatError and nothing else; what it returns goes through
  spikes_from_messages and WordDecoder without error.
- A Receiver on a real ZeroMQ socket pair (PUSH/PULL and DEALER/ROUTER over tcp) counts and drops every
  malformed message and delivers every valid one, in order, never raising.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acquisition.openephys import (
    OpenEphysFormatError,
    UnitLayout,
    WordDecoder,
    decode_message,
    encode_spikes,
    encode_ttl,
    spikes_from_messages,
)
from contract import messages as m
from tests.helpers import FUZZ, FUZZ_SCALE, encode_frames, examples, names, valid_messages
from transport.links import Receiver

# -- arbitrary JSON, with the values that broke the decoders before -------------------------------------------
_nasty_ints = st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 2**31, 10**30, -1, 0, 10**9])
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | _nasty_ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4), max_leaves=12
)
_dtypes = (
    st.sampled_from(
        [
            "<u2",
            "|u1",
            "<f8",
            "<f4",
            ",u2",
            "O",
            "V8",
            "<i8",
            "S3",
            "u2",
            "float64",
            "",
            "(2)u1",
            "i4,i4",
            "<U4",
            "M8[s]",
        ]
    )
    | st.text(max_size=6)
    | json_values
)
_shape_entries = st.integers(0, 6) | st.integers(-5, 2**66) | _nasty_ints | st.booleans() | json_scalars
_shapes = st.lists(_shape_entries, max_size=70) | json_values


EXAMPLES = {type(x).__name__: x for x in examples()}


@st.composite
def mutated_frames(draw, name: str) -> list[bytes]:
    """A valid message of type `name` with one to three of its parts replaced by arbitrary values."""
    frames = encode_frames(EXAMPLES[name])
    header = json.loads(frames[1])
    for _ in range(draw(st.integers(1, 3))):
        part = draw(
            st.sampled_from(
                [
                    "field",
                    "drop_field",
                    "extra_field",
                    "array_dtype",
                    "array_shape",
                    "array_desc",
                    "buffer",
                    "sized_buffer",
                    "version",
                    "header",
                    "frames",
                ]
            )
        )
        fields = header.get("fields") if isinstance(header.get("fields"), dict) else {}
        arrays = (
            [a for a in header.get("arrays", []) if isinstance(a, list) and len(a) == 3]
            if isinstance(header.get("arrays"), list)
            else []
        )
        if part == "field" and fields:
            fields[draw(st.sampled_from(sorted(fields)))] = draw(json_values)
        elif part == "drop_field" and fields:
            del fields[draw(st.sampled_from(sorted(fields)))]
        elif part == "extra_field":
            fields[draw(st.text(max_size=8))] = draw(json_values)
        elif part in ("array_dtype", "array_shape", "array_desc", "sized_buffer") and arrays:
            i = draw(st.integers(0, len(arrays) - 1))
            if part == "array_dtype":
                arrays[i][1] = draw(_dtypes)
            elif part == "array_shape":
                arrays[i][2] = draw(_shapes)
            elif part == "array_desc":
                arrays[i] = draw(json_values)
            elif arrays[i][1] in ("<u2", "|u1", "<f8", "<f4"):  # a small shape, a buffer of exactly its size
                dtype = np.dtype(arrays[i][1])
                shape = draw(st.lists(st.integers(0, 5), min_size=1, max_size=4))
                arrays[i][2] = shape
                if 2 + i < len(frames):
                    frames[2 + i] = draw(
                        st.binary(
                            min_size=math.prod(shape) * dtype.itemsize, max_size=math.prod(shape) * dtype.itemsize
                        )
                    )
        elif part == "buffer" and len(frames) > 2:
            frames[draw(st.integers(2, len(frames) - 1))] = draw(st.binary(max_size=64))
        elif part == "version":
            header["v"] = draw(json_values)
        elif part == "header":
            header = draw(st.dictionaries(st.sampled_from(["v", "fields", "arrays", "x"]), json_values, max_size=4))
        elif part == "frames":
            frames = draw(st.permutations(frames)) if draw(st.booleans()) else frames[: draw(st.integers(0, 5))]
    try:
        text = json.dumps(header).encode()
    except (TypeError, ValueError):
        text = b"{"
    return [*frames[:1], text, *frames[2:]] if len(frames) >= 2 else frames


random_frames = st.tuples(
    st.sampled_from([n.encode() for n in m.MESSAGE_TYPES]) | st.binary(max_size=40),
    st.lists(st.binary(max_size=80) | json_values.map(lambda v: json.dumps(v).encode()), max_size=5),
).map(lambda t: [t[0], *t[1]])


def decode_or_documented_error(frames):
    """Decode; MessageError is the documented outcome, anything else fails the test."""
    try:
        msg = m.decode(frames)
    except m.MessageError:
        return None
    msg.validate()  # whatever decodes is valid
    return msg


@pytest.mark.parametrize("name", sorted(m.MESSAGE_TYPES))
@FUZZ
@given(data=st.data())
def test_decode_raises_only_message_error_for_mutated_messages(name, data):
    decode_or_documented_error(data.draw(mutated_frames(name)))


@FUZZ
@given(frames=random_frames)
def test_decode_raises_only_message_error_for_random_frames(frames):
    decode_or_documented_error(frames)


def assert_same(a, b) -> None:
    assert type(a) is type(b)
    for name, value in vars(a).items():
        got = getattr(b, name)
        if isinstance(value, np.ndarray):
            assert got.dtype == value.dtype and got.shape == value.shape
            np.testing.assert_array_equal(got, value)
        elif isinstance(value, dict):
            assert json.dumps(got, sort_keys=True) == json.dumps(value, sort_keys=True)  # NaN == NaN here
        else:
            assert got == value


@settings(FUZZ, max_examples=int(300 * FUZZ_SCALE))
@given(msg=valid_messages())
def test_valid_messages_always_decode_unchanged(msg):
    assert_same(msg, m.decode(encode_frames(msg)))


@FUZZ
@given(
    msg=valid_messages(),
    n_neurons=st.none() | st.integers(0, 70_000),
    image_shape=st.none() | st.tuples(st.integers(1, 8), st.integers(1, 8), st.sampled_from([1, 3, 4])),
    roles=st.none() | st.lists(names, max_size=3).map(tuple),
)
def test_context_checks_raise_only_message_error(msg, n_neurons, image_shape, roles):
    try:
        m.check_context(m.decode(encode_frames(msg)), n_neurons=n_neurons, image_shape=image_shape, roles=roles)
    except m.MessageError:
        pass


# -- the Open Ephys decoder ----------------------------------------------------------------------------------
def _oe_valid():
    return [*encode_spikes(np.array([0, 3]), np.array([0.5, 1.25]), num_channels=2), encode_ttl(10, 1, True)]


@st.composite
def oe_frames(draw) -> list:
    if draw(st.booleans()):
        return draw(st.lists(st.binary(max_size=40), max_size=3))
    kind, body = draw(st.sampled_from(_oe_valid()))
    obj = json.loads(body)
    for _ in range(draw(st.integers(1, 3))):
        choice = draw(st.sampled_from(["set", "drop", "kind", "electrode", "raw"]))
        if choice == "set":
            key = draw(st.sampled_from(sorted(obj)) | st.text(max_size=6))
            obj[key] = draw(json_values)
        elif choice == "drop" and obj:
            del obj[draw(st.sampled_from(sorted(obj)))]
        elif choice == "kind":
            kind = draw(st.binary(min_size=0, max_size=3))
        elif choice == "electrode":
            obj["electrode"] = "Electrode " + draw(
                st.sampled_from(["70000", "65536", "0", "-3", "1_0", " 7", "9" * 30, "²", "12"])
            )
        else:
            return [kind, draw(st.binary(max_size=60))]
    try:
        return [kind, json.dumps(obj).encode()]
    except (TypeError, ValueError):
        return [kind, b"{"]


@FUZZ
@given(frames=oe_frames(), units=st.integers(1, 4))
def test_open_ephys_decoder_raises_only_its_format_error(frames, units):
    try:
        body = decode_message(frames)
    except OpenEphysFormatError:
        return
    neuron, t, skipped = spikes_from_messages([body], UnitLayout(units_per_electrode=units))
    assert len(neuron) + skipped == (body["event_type"] == "spike")
    assert np.isfinite(t).all()
    WordDecoder(8).feed([body])


# -- Receiver on real sockets ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def socket_pairs():
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for server, client in ((pull, push), (router, dealer)):
        port = server.bind_to_random_port("tcp://127.0.0.1")
        client.connect(f"tcp://127.0.0.1:{port}")
    yield {"push": (push, Receiver(pull)), "dealer": (dealer, Receiver(router, routed=True))}
    for s in (pull, push, router, dealer):
        s.close(0)
    ctx.term()


SENTINEL = m.Shutdown(reason="end of example")


@settings(
    FUZZ,
    max_examples=int(60 * FUZZ_SCALE),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batch=st.lists(
        st.sampled_from(sorted(m.MESSAGE_TYPES)).flatmap(mutated_frames)
        | random_frames
        | valid_messages().map(encode_frames),
        min_size=1,
        max_size=8,
    ),
    kind=st.sampled_from(["push", "dealer"]),
)
def test_receiver_counts_and_drops_whatever_arrives_on_a_real_socket(socket_pairs, batch, kind):
    sender, receiver = socket_pairs[kind]
    batch = [frames for frames in batch if frames]  # ZeroMQ sends no message of zero frames
    expected = [decode_or_documented_error(frames) for frames in batch]
    before = receiver.malformed
    for frames in batch:
        sender.send_multipart(frames)
    m.send(sender, SENTINEL)
    got = []
    while True:
        assert receiver.sock.poll(5000), "the receiver stopped getting messages"
        item = receiver.recv()
        if item is None:
            continue
        msg = item[1] if kind == "dealer" else item
        if isinstance(msg, m.Shutdown) and msg.reason == SENTINEL.reason:
            break
        got.append(msg)
    assert receiver.malformed - before == sum(e is None for e in expected)
    wanted = [e for e in expected if e is not None]
    assert len(got) == len(wanted)
    for a, b in zip(wanted, got):
        assert_same(a, b)
