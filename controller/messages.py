"""Every message that crosses a socket in cortexloop, and its wire encoding.

Wire format (ZeroMQ multipart, no pickle):

    frame 0   message type, ASCII (e.g. b"SpikeBatch")
    frame 1   JSON header: {"v": PROTOCOL_VERSION, "fields": {...}, "arrays": [[name, dtype, shape], ...]}
    frame 2+  one raw, C-contiguous numpy buffer per array, in the order of "arrays"

Decoding checks the type, the protocol version, every field's presence and JSON
type, and every buffer's size against its dtype and shape. Anything else raises
MessageError, which receivers count and drop: a malformed message never stops a
session. The checks run once per message (a spike batch carries ~1,000 spikes),
never per spike.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROTOCOL_VERSION = 1


class MessageError(ValueError):
    """A message that cannot be decoded; says which message and why."""


def _arr(dtype: str) -> Any:
    return field(default_factory=lambda: np.zeros(0, dtype=dtype), metadata={"dtype": dtype})


@dataclass
class SpikeBatch:
    """Spikes of one acquisition stream over [t_start_s, t_end_s) of its own clock.

    `seq` increases by one per batch; a gap means batches were lost, and
    `total_spikes` (cumulative, including this batch) says how many spikes went with them.
    """

    stream: str
    seq: int
    t_start_s: float
    t_end_s: float
    total_spikes: int
    neuron: np.ndarray = _arr("uint16")
    time_s: np.ndarray = _arr("float64")


@dataclass
class EventCode:
    """An event code word; `clock` says whose clock `time_s` is in.

    The presenter sends codes stamped in its clock; the acquisition system records
    them and republishes them stamped in the acquisition clock.
    """

    stream: str
    seq: int
    code: int
    time_s: float
    clock: str  # "presenter" or "acquisition"
    trial_id: int = -1
    index: int = -1
    image_hash: str = ""


@dataclass
class Heartbeat:
    """A process says it is alive; acquisition streams also say how far their clock has got."""

    role: str
    seq: int
    clock_s: float
    stream: str = ""
    info: dict = field(default_factory=dict)  # e.g. the presenter's kind and frame pacing


@dataclass
class ScreenImage:
    """Pixels of an image shown on screen, for a simulated recording system that 'sees' the screen.

    Sent once per image hash, before the first event code that names it.
    """

    image_hash: str
    pixels: np.ndarray = _arr("uint8")


@dataclass
class TrialPlan:
    """What to show in one trial: the images (pixels, keyed by content hash) and the timing in frames."""

    trial_id: int
    image_hashes: list
    fixation_frames: int
    on_frames: int
    off_frames: int
    iti_frames: int
    refresh_hz: float
    model_version: int
    source: str  # "model" or "pool" (fallback when the model's plan was late)
    reasons: list  # why each image was chosen, one string per image
    pixels: np.ndarray = _arr("uint8")  # (n_images, H, W, C)


@dataclass
class OnsetReport:
    """One image onset, stamped at the flip in the presenter clock."""

    trial_id: int
    index: int
    image_hash: str
    flip_s: float
    frame: int


@dataclass
class TrialReport:
    """End of a trial at the presenter: done or aborted, with its frame timing.

    status: "done", "aborted" (fixation broke) or "gap" (queue ran empty; trial_id -1).
    """

    trial_id: int
    status: str
    start_s: float
    end_s: float
    dropped_frames: int
    n_onsets: int
    reason: str = ""
    frame_intervals_s: np.ndarray = _arr("float32")
    onset_to_flip_error_s: np.ndarray = _arr("float32")  # per onset: stamp in the flip callback vs flip return


@dataclass
class ResponsesUpdate:
    """New responses for the model worker: images and their spike counts in the response window."""

    trial_id: int
    image_hashes: list
    pixels: np.ndarray = _arr("uint8")  # (n, H, W, C)
    counts: np.ndarray = _arr("float32")  # (n, n_neurons)


@dataclass
class ModelRequest:
    """A request to the model worker.

    op: "plan" (choose n_images for trial_id), "predict" (rates for pixels), "status".
    On a virtual clock, train_steps is the training budget to spend before answering a plan.
    """

    request_id: int
    op: str
    trial_id: int = -1
    n_images: int = 0
    train_steps: int = 0
    pixels: np.ndarray = _arr("uint8")


@dataclass
class ModelReply:
    """The model worker's answer. For "plan": images and reasons; for "predict": rates (members, n, neurons)."""

    request_id: int
    op: str
    model_version: int
    trial_id: int = -1
    image_hashes: list = field(default_factory=list)
    reasons: list = field(default_factory=list)
    info: dict = field(default_factory=dict)
    pixels: np.ndarray = _arr("uint8")
    rates: np.ndarray = _arr("float32")


@dataclass
class Shutdown:
    reason: str


MESSAGE_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (SpikeBatch, EventCode, Heartbeat, ScreenImage, TrialPlan, OnsetReport, TrialReport,
                ResponsesUpdate, ModelRequest, ModelReply, Shutdown)
}

_JSON_TYPES: dict[Any, tuple] = {
    int: (int,), float: (int, float), str: (str,), list: (list,), dict: (dict,),
    "int": (int,), "float": (int, float), "str": (str,), "list": (list,), "dict": (dict,),
}


def _schema(cls: type) -> tuple[list, list]:
    cached = cls.__dict__.get("_wire_schema")
    if cached is not None:
        return cached
    scalars, arrays = [], []
    for f in dataclasses.fields(cls):
        if "dtype" in f.metadata:
            arrays.append((f.name, np.dtype(f.metadata["dtype"])))
        else:
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            scalars.append((f.name, _JSON_TYPES[f.type], required))
    cls._wire_schema = (scalars, arrays)
    return cls._wire_schema


def encode(msg: Any) -> list[bytes]:
    """Message -> multipart frames."""
    cls = type(msg)
    if cls.__name__ not in MESSAGE_TYPES:
        raise TypeError(f"{cls.__name__} is not a cortexloop message")
    scalars, arrays = _schema(cls)
    fields = {name: getattr(msg, name) for name, _, _ in scalars}
    header_arrays, buffers = [], []
    for name, dtype in arrays:
        a = np.ascontiguousarray(getattr(msg, name), dtype=dtype)
        header_arrays.append([name, dtype.str, list(a.shape)])
        buffers.append(a.data)
    header = json.dumps({"v": PROTOCOL_VERSION, "fields": fields, "arrays": header_arrays},
                        separators=(",", ":")).encode()
    return [cls.__name__.encode(), header, *buffers]


def decode(frames: list) -> Any:
    """Multipart frames -> message. Raises MessageError naming the message and the problem."""
    if len(frames) < 2:
        raise MessageError(f"message has {len(frames)} frame(s); at least 2 expected (type, header)")
    raw = [bytes(f.buffer) if hasattr(f, "buffer") else f for f in frames]
    try:
        name = bytes(raw[0]).decode("ascii")
    except UnicodeDecodeError:
        raise MessageError("message type frame is not ASCII") from None
    cls = MESSAGE_TYPES.get(name)
    if cls is None:
        raise MessageError(f"unknown message type {name[:40]!r}")
    try:
        header = json.loads(bytes(raw[1]))
    except (ValueError, UnicodeDecodeError) as err:
        raise MessageError(f"{name}: header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise MessageError(f"{name}: header is not a JSON object")
    if header.get("v") != PROTOCOL_VERSION:
        raise MessageError(f"{name}: protocol version {header.get('v')!r}, this build speaks {PROTOCOL_VERSION}")
    scalars, arrays = _schema(cls)
    given = header.get("fields")
    if not isinstance(given, dict):
        raise MessageError(f"{name}: header has no 'fields' object")
    kwargs: dict[str, Any] = {}
    known = set()
    for fname, types, required in scalars:
        known.add(fname)
        if fname not in given:
            if required:
                raise MessageError(f"{name}: missing field {fname!r}")
            continue
        value = given[fname]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise MessageError(f"{name}.{fname}: expected {types[0].__name__}, got {type(value).__name__}")
        kwargs[fname] = value
    extra = set(given) - known
    if extra:
        raise MessageError(f"{name}: unknown field(s) {sorted(extra)}")
    described = header.get("arrays")
    if not isinstance(described, list) or len(described) != len(arrays):
        raise MessageError(f"{name}: expected {len(arrays)} array(s) described in header")
    if len(raw) != 2 + len(arrays):
        raise MessageError(f"{name}: expected {2 + len(arrays)} frames, got {len(raw)}")
    for (aname, dtype), desc, buf in zip(arrays, described, raw[2:]):
        if not (isinstance(desc, list) and len(desc) == 3 and desc[0] == aname):
            raise MessageError(f"{name}: array description {desc!r} does not match field {aname!r}")
        try:
            same_dtype = isinstance(desc[1], str) and np.dtype(desc[1]) == dtype
        except TypeError:
            same_dtype = False
        if not same_dtype:
            raise MessageError(f"{name}.{aname}: dtype {desc[1]!r}, expected {dtype.str}")
        shape = desc[2]
        if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise MessageError(f"{name}.{aname}: bad shape {shape!r}")
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if len(buf) != expected:
            raise MessageError(f"{name}.{aname}: {len(buf)} bytes, shape {shape} of {dtype} needs {expected}")
        kwargs[aname] = np.frombuffer(buf, dtype=dtype).reshape(shape)
    return cls(**kwargs)


def send(sock, msg: Any, flags: int = 0) -> None:
    sock.send_multipart(encode(msg), flags=flags, copy=False)


def send_routed(sock, identity: bytes, msg: Any) -> None:
    """Send on a ROUTER socket to one peer."""
    sock.send_multipart([identity, *encode(msg)], copy=False)


class Codes:
    """Event code words sent by the presenter and recorded by the acquisition system."""

    TRIAL_START = 10
    IMAGE_ONSET = 20
    TRIAL_END = 30
    TRIAL_ABORT = 31
