"""Every message that crosses a socket in cortexloop, its wire encoding and its validation.

A message is a ZeroMQ multipart: type name, JSON header, one raw numpy buffer per array field
(no pickle; the frame layout: docs/wire-protocol.md).

`decode` checks the type, the protocol version, every field's presence and JSON type, every
buffer's size against its dtype and shape, and then the message's own `validate()` (lengths
agree, times finite, integers in range, hashes match their pixels, sizes bounded). For any input
whatever it raises MessageError and nothing else; receivers count and drop such messages, so a
malformed message never stops a session.

Checks that need the rig (neuron count, image shape, who may send what on a socket) are in
`check_context`, which receivers call with what they know. Checks run per message, never per spike
in Python.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from contract.images import image_hash

PROTOCOL_VERSION = 1

# Bounds. Each is a generous multiple of what any valid rig file allows (see controller/config.py,
# stimulus/config.py), so nothing a rig produces is refused, while a message claiming a billion frames
# or a million images is.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # SQLite's INTEGER: every integer field must fit
MAX_ABS_TIME_S = 1e11  # a clock since boot, or since the epoch (1.8e9 s), fits; inf and 1e300 do not
MAX_HEADER_BYTES = 4 * 2**20  # JSON header frame (hashes, reasons, info dicts are small)
MAX_JSON_DEPTH = 32  # nesting of free-form info dicts
MAX_NAME_CHARS = 256  # stream, role, source, image hash strings
MAX_TEXT_CHARS = 4096  # free text: reasons, shutdown reasons
MAX_PLAN_IMAGES = 1000  # images in one plan or responses update (a rig file allows 100 per trial)
MAX_PREDICT_IMAGES = 100_000  # images in one predict request (a rig file's held-out set is at most 100,000)
MAX_IMAGE_SIDE_PX = 4096  # rig images are at most 512 px a side
IMAGE_CHANNELS = (1, 3, 4)
MAX_NEURONS = 65_536  # neuron indices travel as uint16
MAX_SPIKES_PER_BATCH = 4_000_000  # a rig file allows 2,000 neurons and 1 s batches: 2 M spikes at 1 kHz each
MAX_FRAMES = 100_000  # one interval of a trial, in frames: 200 s at 500 Hz (a rig file allows 60 s)
MAX_TRIAL_FRAMES = 2_000_000  # frame intervals of one trial (a rig file's longest, ~2,070 s, has 1.04 M at 500 Hz)
MAX_REFRESH_HZ = 2000.0
MAX_TRAIN_STEPS = 1_000_000  # training budget of one plan request (a rig file allows 100,000)
MAX_ENSEMBLE = 1024  # members in a predict reply (a rig file allows 64)
MAX_EVENT_CODE = 2**32 - 1
EVENT_CLOCKS = ("presenter", "acquisition")
TRIAL_STATUSES = ("started", "done", "aborted", "gap")
MODEL_OPS = ("plan", "predict", "status")


class MessageError(ValueError):
    """A message that cannot be decoded or is not valid; says which message and why."""


def _arr(dtype: str, ndim: int) -> Any:
    """An array field: its dtype and rank on the wire (an empty 1-d array also stands for "none")."""
    return field(default_factory=lambda: np.zeros(0, dtype=dtype), metadata={"dtype": dtype, "ndim": ndim})


# -- checks shared by the validate() methods ----------------------------------------------------------------
def _where(msg: Any, name: str) -> str:
    return f"{type(msg).__name__}.{name}"


def _short(value: Any) -> str:
    """A value for an error message, cut short (repr of an int over 4,300 digits raises)."""
    try:
        return repr(value)[:60]
    except ValueError:
        return f"a {type(value).__name__} too long to show"


def _int_in(msg: Any, name: str, lo: int, hi: int) -> None:
    value = getattr(msg, name)
    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and lo <= value <= hi):
        raise MessageError(f"{_where(msg, name)}: {_short(value)} is not an integer in [{lo}, {hi}]")


def _time(msg: Any, name: str) -> None:
    value = getattr(msg, name)
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if ok and isinstance(value, int):
        ok = abs(value) <= MAX_ABS_TIME_S  # compared exactly: float() of a huge int would overflow
    if not (ok and math.isfinite(value) and abs(value) <= MAX_ABS_TIME_S):
        raise MessageError(f"{_where(msg, name)}: {_short(value)} is not a finite time within ±{MAX_ABS_TIME_S:g} s")


def _name(msg: Any, name: str, allow_empty: bool = True) -> None:
    value = getattr(msg, name)
    if (
        not isinstance(value, str)
        or not (0 if allow_empty else 1) <= len(value) <= MAX_NAME_CHARS
        or not value.isprintable()
    ):
        raise MessageError(
            f"{_where(msg, name)}: {_short(value)} is not a printable name of "
            f"{0 if allow_empty else 1}..{MAX_NAME_CHARS} characters"
        )


def _one_of(msg: Any, name: str, allowed: tuple) -> None:
    value = getattr(msg, name)
    if value not in allowed:
        raise MessageError(f"{_where(msg, name)}: {_short(value)} is not one of {list(allowed)}")


def _text(msg: Any, name: str) -> None:
    value = getattr(msg, name)
    if not isinstance(value, str) or len(value) > MAX_TEXT_CHARS:
        raise MessageError(f"{_where(msg, name)}: not a text of at most {MAX_TEXT_CHARS} characters")


def _str_list(msg: Any, name: str, max_len: int, max_chars: int) -> None:
    value = getattr(msg, name)
    if not isinstance(value, list) or len(value) > max_len:
        raise MessageError(f"{_where(msg, name)}: not a list of at most {max_len} strings")
    for i, s in enumerate(value):
        if not isinstance(s, str) or len(s) > max_chars:
            raise MessageError(f"{_where(msg, name)}[{i}]: not a string of at most {max_chars} characters")


def _array(
    msg: Any, name: str, ndim: int, max_len: int | None = None, finite: bool = False, nonnegative: bool = False
) -> np.ndarray:
    """The field as an array of rank ndim (an empty 1-d array counts as an empty one), checked."""
    a = np.asarray(getattr(msg, name))
    if a.ndim != ndim and not (a.ndim == 1 and a.size == 0):
        raise MessageError(f"{_where(msg, name)}: rank {a.ndim} (shape {a.shape}), expected {ndim}")
    if max_len is not None and a.ndim >= 1 and len(a) > max_len:
        raise MessageError(f"{_where(msg, name)}: {len(a)} entries, at most {max_len} allowed")
    if finite and a.size and not np.isfinite(a).all():
        raise MessageError(f"{_where(msg, name)}: contains NaN or infinity")
    if nonnegative and a.size and not (a >= 0).all():
        raise MessageError(f"{_where(msg, name)}: contains negative values")
    return a


def _images(msg: Any, name: str, max_images: int) -> np.ndarray:
    """A stack of uint8 images (n, H, W, C), or an empty array."""
    a = _array(msg, name, 4, max_images)
    if a.ndim == 4:
        _check_image_shape(msg, name, a.shape[1:])
    return a


def _check_image_shape(msg: Any, name: str, shape: tuple) -> None:
    h, w, c = shape
    if not (1 <= h <= MAX_IMAGE_SIDE_PX and 1 <= w <= MAX_IMAGE_SIDE_PX and c in IMAGE_CHANNELS):
        raise MessageError(
            f"{_where(msg, name)}: image shape {tuple(shape)} is not (H, W, C) with H, W in "
            f"1..{MAX_IMAGE_SIDE_PX} and C in {IMAGE_CHANNELS}"
        )


def _hashes_match(msg: Any, hashes_name: str, pixels_name: str) -> None:
    """One content hash per image, each the hash of its image (contract.images.image_hash)."""
    hashes, pixels = getattr(msg, hashes_name), np.asarray(getattr(msg, pixels_name))
    n = len(pixels) if pixels.ndim == 4 else 0
    if len(hashes) != n:
        raise MessageError(f"{type(msg).__name__}: {len(hashes)} image hashes for {n} images")
    for i, (h, px) in enumerate(zip(hashes, pixels)):
        if h != image_hash(px):
            raise MessageError(f"{_where(msg, hashes_name)}[{i}]: {h[:40]!r} is not the hash of its pixels")


def _same_length(msg: Any, names: tuple, lengths: tuple) -> None:
    if len(set(lengths)) > 1:
        raise MessageError(
            f"{type(msg).__name__}: lengths disagree: " + ", ".join(f"{n} {k}" for n, k in zip(names, lengths))
        )


# -- the messages -------------------------------------------------------------------------------------------
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
    neuron: np.ndarray = _arr("uint16", 1)
    time_s: np.ndarray = _arr("float64", 1)

    def validate(self) -> None:
        _name(self, "stream", allow_empty=False)
        _int_in(self, "seq", 0, INT64_MAX)
        _time(self, "t_start_s")
        _time(self, "t_end_s")
        if self.t_end_s < self.t_start_s:
            raise MessageError(f"SpikeBatch: t_end_s {self.t_end_s} is before t_start_s {self.t_start_s}")
        neuron = _array(self, "neuron", 1, MAX_SPIKES_PER_BATCH)
        times = _array(self, "time_s", 1, MAX_SPIKES_PER_BATCH, finite=True)
        _same_length(self, ("neuron", "time_s"), (len(neuron), len(times)))
        _int_in(self, "total_spikes", len(neuron), INT64_MAX)
        if times.size and np.abs(times).max() > MAX_ABS_TIME_S:
            raise MessageError(f"SpikeBatch.time_s: spike times beyond ±{MAX_ABS_TIME_S:g} s")


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

    def validate(self) -> None:
        _name(self, "stream", allow_empty=False)
        _int_in(self, "seq", 0, INT64_MAX)
        _int_in(self, "code", 0, MAX_EVENT_CODE)
        _time(self, "time_s")
        _one_of(self, "clock", EVENT_CLOCKS)
        _int_in(self, "trial_id", -1, INT64_MAX)
        _int_in(self, "index", -1, MAX_PLAN_IMAGES - 1)
        _name(self, "image_hash")


@dataclass
class Heartbeat:
    """A process says it is alive; acquisition streams also say how far their clock has got."""

    role: str
    seq: int
    clock_s: float
    stream: str = ""
    info: dict = field(default_factory=dict)  # e.g. the presenter's kind and frame pacing

    def validate(self) -> None:
        _name(self, "role", allow_empty=False)
        _int_in(self, "seq", 0, INT64_MAX)
        _time(self, "clock_s")
        _name(self, "stream")
        _json_value(self.info, "Heartbeat.info", 0)


@dataclass
class ScreenImage:
    """Pixels of an image shown on screen, for a simulated recording system that 'sees' the screen.

    Sent once per image hash, before the first event code that names it.
    """

    image_hash: str
    pixels: np.ndarray = _arr("uint8", 3)

    def validate(self) -> None:
        a = _array(self, "pixels", 3)
        if a.ndim != 3:
            raise MessageError("ScreenImage.pixels: no image")
        _check_image_shape(self, "pixels", a.shape)
        if self.image_hash != image_hash(a):
            raise MessageError(f"ScreenImage.image_hash: {self.image_hash[:40]!r} is not the hash of its pixels")


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
    pixels: np.ndarray = _arr("uint8", 4)  # (n_images, H, W, C)

    def validate(self) -> None:
        _int_in(self, "trial_id", 0, INT64_MAX)
        _str_list(self, "image_hashes", MAX_PLAN_IMAGES, MAX_NAME_CHARS)
        _str_list(self, "reasons", MAX_PLAN_IMAGES, MAX_TEXT_CHARS)
        for name in ("fixation_frames", "off_frames", "iti_frames"):
            _int_in(self, name, 0, MAX_FRAMES)
        _int_in(self, "on_frames", 1, MAX_FRAMES)
        if not (isinstance(self.refresh_hz, (int, float)) and 1.0 <= self.refresh_hz <= MAX_REFRESH_HZ):
            raise MessageError(f"TrialPlan.refresh_hz: {_short(self.refresh_hz)} is not in [1, {MAX_REFRESH_HZ:g}] Hz")
        _int_in(self, "model_version", -1, INT64_MAX)
        _name(self, "source", allow_empty=False)
        pixels = _images(self, "pixels", MAX_PLAN_IMAGES)
        n = len(pixels) if pixels.ndim == 4 else 0
        if n == 0:
            raise MessageError("TrialPlan: no images")
        _same_length(self, ("image_hashes", "reasons", "images"), (len(self.image_hashes), len(self.reasons), n))
        _hashes_match(self, "image_hashes", "pixels")


@dataclass
class OnsetReport:
    """One image onset, stamped at the flip in the presenter clock."""

    trial_id: int
    index: int
    image_hash: str
    flip_s: float
    frame: int

    def validate(self) -> None:
        _int_in(self, "trial_id", 0, INT64_MAX)
        _int_in(self, "index", 0, MAX_PLAN_IMAGES - 1)
        _name(self, "image_hash")
        _time(self, "flip_s")
        _int_in(self, "frame", 0, INT64_MAX)


@dataclass
class TrialReport:
    """End of a trial at the presenter: done or aborted, with its frame timing.

    status: "started" (sent as the trial begins), "done", "aborted" (fixation broke)
    or "gap" (queue ran empty; trial_id -1).
    """

    trial_id: int
    status: str
    start_s: float
    end_s: float
    dropped_frames: int
    n_onsets: int
    reason: str = ""
    frame_intervals_s: np.ndarray = _arr("float32", 1)
    onset_to_flip_error_s: np.ndarray = _arr("float32", 1)  # per onset: stamp in the flip callback vs flip return

    def validate(self) -> None:
        _int_in(self, "trial_id", -1, INT64_MAX)
        _one_of(self, "status", TRIAL_STATUSES)
        _time(self, "start_s")
        _time(self, "end_s")
        if self.end_s < self.start_s:
            raise MessageError(f"TrialReport: end_s {self.end_s} is before start_s {self.start_s}")
        _int_in(self, "dropped_frames", 0, MAX_TRIAL_FRAMES)
        _int_in(self, "n_onsets", 0, MAX_PLAN_IMAGES)
        _text(self, "reason")
        _array(self, "frame_intervals_s", 1, MAX_TRIAL_FRAMES, finite=True)
        _array(self, "onset_to_flip_error_s", 1, MAX_PLAN_IMAGES, finite=True)


@dataclass
class ResponsesUpdate:
    """New responses for the model worker: images and their spike counts in the response window."""

    trial_id: int
    image_hashes: list
    pixels: np.ndarray = _arr("uint8", 4)  # (n, H, W, C)
    counts: np.ndarray = _arr("float32", 2)  # (n, n_neurons)

    def validate(self) -> None:
        _int_in(self, "trial_id", 0, INT64_MAX)
        _str_list(self, "image_hashes", MAX_PLAN_IMAGES, MAX_NAME_CHARS)
        pixels = _images(self, "pixels", MAX_PLAN_IMAGES)
        counts = _array(self, "counts", 2, MAX_PLAN_IMAGES, finite=True, nonnegative=True)
        n = len(pixels) if pixels.ndim == 4 else 0
        _same_length(
            self,
            ("image_hashes", "images", "count rows"),
            (len(self.image_hashes), n, len(counts) if counts.ndim == 2 else 0),
        )
        if counts.ndim == 2 and counts.shape[1] > MAX_NEURONS:
            raise MessageError(f"ResponsesUpdate.counts: {counts.shape[1]} neurons, at most {MAX_NEURONS}")
        _hashes_match(self, "image_hashes", "pixels")


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
    pixels: np.ndarray = _arr("uint8", 4)

    def validate(self) -> None:
        _int_in(self, "request_id", 0, INT64_MAX)
        _one_of(self, "op", MODEL_OPS)
        _int_in(self, "trial_id", -1, INT64_MAX)
        _int_in(self, "n_images", 0, MAX_PLAN_IMAGES)
        _int_in(self, "train_steps", 0, MAX_TRAIN_STEPS)
        _images(self, "pixels", MAX_PREDICT_IMAGES)


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
    pixels: np.ndarray = _arr("uint8", 4)
    rates: np.ndarray = _arr("float32", 3)

    def validate(self) -> None:
        # Rates may hold NaN (a diverged model): they reach the summary, never the store or a model.
        _int_in(self, "request_id", 0, INT64_MAX)
        _one_of(self, "op", MODEL_OPS)
        _int_in(self, "model_version", -1, INT64_MAX)
        _int_in(self, "trial_id", -1, INT64_MAX)
        _str_list(self, "image_hashes", MAX_PLAN_IMAGES, MAX_NAME_CHARS)
        _str_list(self, "reasons", MAX_PLAN_IMAGES, MAX_TEXT_CHARS)
        _json_value(self.info, "ModelReply.info", 0)
        _images(self, "pixels", MAX_PLAN_IMAGES)
        _same_length(self, ("image_hashes", "reasons"), (len(self.image_hashes), len(self.reasons)))
        _hashes_match(self, "image_hashes", "pixels")
        rates = _array(self, "rates", 3, MAX_ENSEMBLE)
        if rates.ndim == 3 and (rates.shape[1] > MAX_PREDICT_IMAGES or rates.shape[2] > MAX_NEURONS):
            raise MessageError(
                f"ModelReply.rates: shape {rates.shape} beyond ({MAX_ENSEMBLE}, {MAX_PREDICT_IMAGES}, {MAX_NEURONS})"
            )


@dataclass
class Shutdown:
    """Asks the receiving process to stop, saying why."""

    reason: str

    def validate(self) -> None:
        _text(self, "reason")


MESSAGE_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        SpikeBatch,
        EventCode,
        Heartbeat,
        ScreenImage,
        TrialPlan,
        OnsetReport,
        TrialReport,
        ResponsesUpdate,
        ModelRequest,
        ModelReply,
        Shutdown,
    )
}

_JSON_TYPES: dict[Any, tuple] = {
    int: (int,),
    float: (int, float),
    str: (str,),
    list: (list,),
    dict: (dict,),
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "list": (list,),
    "dict": (dict,),
}


def _schema(cls: type) -> tuple[list, list]:
    cached = cls.__dict__.get("_wire_schema")
    if cached is not None:
        return cached
    scalars, arrays = [], []
    for f in dataclasses.fields(cls):
        if "dtype" in f.metadata:
            arrays.append((f.name, np.dtype(f.metadata["dtype"]), f.metadata["ndim"]))
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
    for name, dtype, _ in arrays:
        a = np.ascontiguousarray(getattr(msg, name), dtype=dtype)
        header_arrays.append([name, dtype.str, list(a.shape)])
        buffers.append(a.data)
    header = json.dumps(
        {"v": PROTOCOL_VERSION, "fields": fields, "arrays": header_arrays}, separators=(",", ":")
    ).encode()
    return [cls.__name__.encode(), header, *buffers]


def _json_value(value: Any, where: str, depth: int) -> None:
    """A JSON value from a peer: nested at most MAX_JSON_DEPTH deep, every string storable as UTF-8.

    (json.loads turns "\\ud800" into a lone surrogate, which SQLite cannot store.)
    """
    if depth > MAX_JSON_DEPTH:
        raise MessageError(f"{where}: nested deeper than {MAX_JSON_DEPTH}")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise MessageError(f"{where}: string is not valid Unicode (lone surrogate)") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _json_value(k, where, depth + 1)
            _json_value(v, where, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _json_value(v, where, depth + 1)


def _field_value(name: str, fname: str, value: Any, types: tuple) -> Any:
    """A scalar field checked for its JSON type, its integers in int64 and its floats finite."""
    if not isinstance(value, types) or isinstance(value, bool):
        raise MessageError(f"{name}.{fname}: expected {types[0].__name__}, got {type(value).__name__}")
    if float in types:
        try:
            value = float(value)
        except OverflowError:
            raise MessageError(f"{name}.{fname}: {str(value)[:40]}... does not fit a float") from None
        if not math.isfinite(value):
            raise MessageError(f"{name}.{fname}: {value} is not finite")
    elif isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
        raise MessageError(f"{name}.{fname}: integer {str(value)[:40]} does not fit in 64 bits")
    else:
        _json_value(value, f"{name}.{fname}", 0)
    return value


def _array_value(name: str, aname: str, dtype: np.dtype, ndim: int, desc: Any, buf: bytes) -> np.ndarray:
    if not (isinstance(desc, list) and len(desc) == 3 and desc[0] == aname):
        raise MessageError(f"{name}: array description {str(desc)[:80]} does not match field {aname!r}")
    # Compared as strings: a peer's dtype text is never parsed (numpy's parser evaluates some forms).
    if desc[1] != dtype.str:
        raise MessageError(f"{name}.{aname}: dtype {str(desc[1])[:40]!r}, expected {dtype.str}")
    shape = desc[2]
    if not (
        isinstance(shape, list) and len(shape) in (1, ndim) and all(type(s) is int and 0 <= s < 2**31 for s in shape)
    ):
        raise MessageError(
            f"{name}.{aname}: bad shape {str(shape)[:80]} (rank {ndim} expected, "
            f"or 1 for an empty array; sizes 0..2^31-1)"
        )
    if len(shape) != ndim and shape != [0]:
        raise MessageError(f"{name}.{aname}: shape {shape} has rank {len(shape)}, expected {ndim}")
    expected = math.prod(shape) * dtype.itemsize  # Python integers: no wrap-around
    if len(buf) != expected:
        raise MessageError(f"{name}.{aname}: {len(buf)} bytes, shape {shape} of {dtype} needs {expected}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape)


def decode(frames: list) -> Any:
    """Multipart frames -> a valid message. Raises MessageError naming the message and the problem,
    and no other exception, for any list of frames."""
    if not isinstance(frames, (list, tuple)):
        raise MessageError(f"message frames must be a list, got {type(frames).__name__}")
    n_frames = len(frames)
    raw = []
    for f in frames:
        if hasattr(f, "buffer"):  # a zmq.Frame
            f = f.buffer
        if not isinstance(f, (bytes, bytearray, memoryview)):
            raise MessageError(f"message frame is {type(f).__name__}, not bytes")
        raw.append(bytes(f))
    if n_frames < 2:
        raise MessageError(f"message has {n_frames} frame(s); at least 2 expected (type, header)")
    try:
        name = raw[0].decode("ascii")
    except UnicodeDecodeError:
        raise MessageError("message type frame is not ASCII") from None
    cls = MESSAGE_TYPES.get(name)
    if cls is None:
        raise MessageError(f"unknown message type {name[:40]!r}")
    if len(raw[1]) > MAX_HEADER_BYTES:
        raise MessageError(f"{name}: header of {len(raw[1])} bytes, at most {MAX_HEADER_BYTES}")
    try:
        header = json.loads(raw[1])
    except (ValueError, UnicodeDecodeError) as err:  # also integers of more than 4,300 digits
        raise MessageError(f"{name}: header is not JSON ({str(err)[:120]})") from None
    except RecursionError:
        raise MessageError(f"{name}: header is nested too deeply") from None
    if not isinstance(header, dict):
        raise MessageError(f"{name}: header is not a JSON object")
    version = header.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise MessageError(f"{name}: protocol version {str(version)[:20]}, this build speaks {PROTOCOL_VERSION}")
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
        kwargs[fname] = _field_value(name, fname, given[fname], types)
    extra = set(given) - known
    if extra:
        raise MessageError(f"{name}: unknown field(s) {[str(x)[:40] for x in sorted(extra)[:5]]}")
    described = header.get("arrays")
    if not isinstance(described, list) or len(described) != len(arrays):
        raise MessageError(f"{name}: expected {len(arrays)} array(s) described in header")
    if n_frames != 2 + len(arrays):
        raise MessageError(f"{name}: expected {2 + len(arrays)} frames, got {n_frames}")
    for (aname, dtype, ndim), desc, buf in zip(arrays, described, raw[2:]):
        kwargs[aname] = _array_value(name, aname, dtype, ndim, desc, buf)
    msg = cls(**kwargs)
    msg.validate()
    return msg


def check_context(
    msg: Any, *, n_neurons: int | None = None, image_shape: tuple | None = None, roles: tuple | None = None
) -> None:
    """Checks of a valid message that need the rig; raises MessageError. Pass what the receiver knows:

    n_neurons    spike neuron indices below it; counts (n, n_neurons); predicted rates (..., n_neurons)
    image_shape  (H, W, C) of every image carried (plans, responses, predict requests, replies, screen images)
    roles        Heartbeat roles expected on this socket (a heartbeat claiming another role is refused)
    """
    kind = type(msg).__name__
    if n_neurons is not None:
        if isinstance(msg, SpikeBatch) and len(msg.neuron) and int(np.max(msg.neuron)) >= n_neurons:
            raise MessageError(f"SpikeBatch.neuron: index {int(np.max(msg.neuron))} for a rig of {n_neurons} neurons")
        if isinstance(msg, ResponsesUpdate) and len(msg.image_hashes) and msg.counts.shape[1:] != (n_neurons,):
            raise MessageError(f"ResponsesUpdate.counts: shape {msg.counts.shape}, expected (n, {n_neurons})")
        if isinstance(msg, ModelReply) and msg.rates.ndim == 3 and msg.rates.shape[2] != n_neurons:
            raise MessageError(f"ModelReply.rates: shape {msg.rates.shape}, expected (members, n, {n_neurons})")
    if image_shape is not None:
        image_shape = tuple(image_shape)
        if isinstance(msg, ScreenImage):
            shapes = [msg.pixels.shape]
        elif isinstance(msg, (TrialPlan, ResponsesUpdate, ModelRequest, ModelReply)) and msg.pixels.ndim == 4:
            shapes = [msg.pixels.shape[1:]]
        else:
            shapes = []
        for shape in shapes:
            if tuple(shape) != image_shape:
                raise MessageError(f"{kind}.pixels: images of shape {tuple(shape)}, the rig's are {image_shape}")
    if roles is not None and isinstance(msg, Heartbeat) and msg.role not in roles:
        raise MessageError(f"Heartbeat.role: {msg.role[:40]!r} is not expected here (expected {list(roles)})")


def send(sock, msg: Any, flags: int = 0) -> None:
    """Encode and send a message on a ZeroMQ socket."""
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
    # Not a word the presenter sends: the acquisition system's record of the photodiode's edge (the onset as
    # the screen really showed it), reported by sources that have a photodiode line.
    PHOTODIODE = 40
