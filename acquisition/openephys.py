"""The Open Ephys GUI Event Broadcaster wire format (JSON output), as pure encode/decode functions.

Every event is one two-frame message: a uint16 type (0 TTL, 1 spike) and a UTF-8 JSON object written by JUCE's
JSON writer (the fields and how they are written: docs/wire-protocol.md). Times travel as sample numbers on the
acquisition clock (time_s = sample_number / sample_rate); `sample_rate` is a float32 widened to a double. A sorted
unit is (electrode, sorted_id), numbered as the GUI's Spike Sorter numbers them: one counter shared by all
electrodes, from 1; sorted_id 0 means unsorted. The plugin's other output formats are recognised
(`other_format`), never decoded. No sockets here.
"""

from __future__ import annotations

import functools
import json
import json.scanner
import math
from dataclasses import dataclass

import numpy as np

TTL_TYPE = 0
SPIKE_TYPE = 1
_TYPE_DTYPE = np.dtype("<u2")


class OpenEphysFormatError(ValueError):
    """A message that is not a well-formed Event Broadcaster message."""


@dataclass(frozen=True)
class UnitLayout:
    """How neuron indices map to (electrode name, sorted_id), as the GUI would name them: units_per_electrode
    units on each electrode (electrode e holds neurons (e-1)*units_per_electrode ..), numbered by the Spike
    Sorter's one counter shared by all electrodes, so neuron n is sorted_id n + 1 wherever it is."""

    units_per_electrode: int = 1
    electrode_prefix: str = "Electrode "

    def unit_of(self, neuron: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        neuron = np.asarray(neuron, np.int64)
        return neuron // self.units_per_electrode + 1, neuron + 1

    def neuron_of(self, electrode: str, sorted_id: int) -> int | None:
        """The neuron index of a unit, or None for unsorted spikes, foreign electrode names and a sorted_id that
        is not on that electrode."""
        if sorted_id < 1 or not electrode.startswith(self.electrode_prefix):
            return None
        digits = electrode[len(self.electrode_prefix) :]
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 9):  # int() takes " 7", "1_0", 5000 digits
            return None
        n = sorted_id - 1
        return n if int(digits) == n // self.units_per_electrode + 1 else None

    def units(self, n_neurons: int) -> list[list]:
        """The unit map ([electrode name, sorted_id] per neuron, in order) of a rig file for these neurons."""
        electrodes, ids = self.unit_of(np.arange(n_neurons))
        return [[f"{self.electrode_prefix}{e}", int(u)] for e, u in zip(electrodes.tolist(), ids.tolist())]


def _type_frame(kind: int) -> bytes:
    return np.array([kind], _TYPE_DTYPE).tobytes()


# -- JSON as the plugin writes it: JUCE's JSON::toString of a DynamicObject, in the GUI's JUCE -------------------
JUCE_STYLES = ("juce6", "juce8")  # GUI 0.6.x (plugin 0.2.x) links JUCE 6; GUI 1.0.x (plugin 0.3.x) JUCE 8


def _trim_float_text(text: str) -> str:
    """Trailing zeros of the fraction dropped (one digit kept), the exponent without '+', leading zeros or a zero
    value: "3.500000e+06" -> "3.5e6", "1.000e+00" -> "1.0"."""
    mantissa, _, exponent = text.partition("e")
    if "." in mantissa:
        whole, _, fraction = mantissa.partition(".")
        mantissa = f"{whole}.{fraction.rstrip('0') or '0'}"
    if not exponent:
        return mantissa
    sign = "-" if exponent.startswith("-") else ""
    digits = exponent.lstrip("+-").lstrip("0")
    return f"{mantissa}e{sign}{digits}" if digits else mantissa


def juce_double(x: float, style: str = "juce8") -> str:
    """A double as JUCE's JSON writer writes it: null if not finite; scientific with 15 decimals beyond
    [1e-5, 1e6); a whole number with one decimal ("30000.0"); else fixed with 15 decimals (JUCE 8, the default
    of JSON::toString) or with about 16 significant digits (JUCE 6); trailing zeros trimmed."""
    x = float(x)
    if not math.isfinite(x):
        return "null"
    a = abs(x)
    if a >= 1e6 or a <= 1e-5:
        return _trim_float_text(f"{x:.15e}")
    if float(int(x)) == x:
        return f"{x:.1f}"
    if style == "juce8":
        places = 15
    elif a < 1.0:
        places = 16 if a >= 1e-1 else 17 if a >= 1e-2 else 18 if a >= 1e-3 else 19 if a >= 1e-4 else 20
    else:
        places = 15 - int(math.floor(math.log10(a)))  # 15 in [1, 10) .. 10 in [1e5, 1e6)
    return _trim_float_text(f"{x:.{places}f}")


@functools.lru_cache(maxsize=4096)  # keys, names and streams repeat in every message
def _juce_string(text: str, style: str) -> str:
    out = []
    for ch in text:
        c = ord(ch)
        if ch in _JUCE_ESCAPES:
            out.append(_JUCE_ESCAPES[ch])
        elif ch == "\a" and style == "juce6":
            out.append("\\a")  # JUCE 6 writes this escape, which JSON does not have
        elif style == "juce8":
            out.append(ch if c >= 32 else f"\\u{c:04x}")  # UTF-8, control characters escaped
        elif 32 <= c < 127:
            out.append(ch)
        elif c > 0xFFFF:  # JUCE 6: everything outside printable ASCII escaped, as UTF-16 code units
            c -= 0x10000
            out.append(f"\\u{0xD800 + (c >> 10):04x}\\u{0xDC00 + (c & 0x3FF):04x}")
        else:
            out.append(f"\\u{c:04x}")
    return '"' + "".join(out) + '"'


_JUCE_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\t": "\\t", "\r": "\\r", "\n": "\\n"}


def _juce_value(v, style: str) -> str:
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return juce_double(v, style)
    return _juce_string(str(v), style)


def juce_json(properties: list[tuple[str, object]], style: str = "juce8") -> bytes:
    """One JSON object as the plugin's JSON::toString writes it (multi-line, CRLF line ends, two-space indent,
    properties in the order they were set, `"key": value`), UTF-8 encoded. style: "juce8" or "juce6"."""
    if style not in JUCE_STYLES:
        raise ValueError(f"style {style!r} is not one of {JUCE_STYLES}")
    body = ",\r\n".join(f"  {_juce_string(k, style)}: {_juce_value(v, style)}" for k, v in properties)
    return ("{\r\n" + body + "\r\n}" if properties else "{\r\n}").encode("utf-8")


def float32(x: float) -> float:
    """A number as the GUI holds it (float32), widened back to a double as the plugin sends it."""
    return float(np.float32(x))


def default_amplitudes_uv(neuron: int, num_channels: int) -> list[float]:
    """A fixed waveform amplitude per unit and channel (largest on one channel), so units look distinct."""
    rng = np.random.default_rng(1_000_003 + int(neuron))
    best = rng.integers(num_channels)
    amps = rng.uniform(10.0, 40.0, num_channels)
    amps[best] = rng.uniform(60.0, 150.0)
    return [round(float(a), 2) for a in amps]


def encode_spikes(
    neuron: np.ndarray,
    time_s: np.ndarray,
    sample_rate: float = 30000.0,
    *,
    stream: str = "virtual_cortex",
    source_node: int = 100,
    num_channels: int = 4,
    layout: UnitLayout = UnitLayout(),
    amplitudes_uv: np.ndarray | None = None,
    style: str = "juce8",
) -> list[list[bytes]]:
    """One [type_frame, json_frame] message per spike, in the given order, as the plugin writes it (juce_json;
    the rate and the amplitudes as float32 values, a non-finite amplitude as null).

    amplitudes_uv: (n_neurons, num_channels); default: default_amplitudes_uv per neuron.
    """
    neuron = np.asarray(neuron, np.int64)
    samples = np.rint(np.asarray(time_s, np.float64) * sample_rate).astype(np.int64)
    electrodes, sorted_ids = layout.unit_of(neuron)
    type_frame = _type_frame(SPIKE_TYPE)
    rate = float32(sample_rate)
    amp_cache: dict[int, list[tuple[str, float]]] = {}
    out = []
    for n, s, e, u in zip(neuron.tolist(), samples.tolist(), electrodes.tolist(), sorted_ids.tolist()):
        if n not in amp_cache:
            amps = amplitudes_uv[n] if amplitudes_uv is not None else default_amplitudes_uv(n, num_channels)
            amp_cache[n] = [(f"amp{ch + 1}", float32(a)) for ch, a in enumerate(list(amps)[:num_channels])]
        body = [
            ("event_type", "spike"),
            ("stream", stream),
            ("source_node", source_node),
            ("electrode", f"{layout.electrode_prefix}{e}"),
            ("num_channels", num_channels),
            ("sample_rate", rate),
            ("sample_number", s),
            ("sorted_id", u),
            *amp_cache[n],
        ]
        out.append([type_frame, juce_json(body, style)])
    return out


def encode_ttl(
    sample_number: int,
    line: int,
    state: bool,
    sample_rate: float = 30000.0,
    *,
    stream: str = "virtual_cortex",
    source_node: int = 100,
    channel_name: str = "TTL Input",
    style: str = "juce8",
) -> list[bytes]:
    """One TTL event, as the plugin writes it: `line` (0-based) went high (state True) or low at sample_number."""
    body = [
        ("event_type", "ttl"),
        ("stream", stream),
        ("source_node", source_node),
        ("sample_rate", float32(sample_rate)),
        ("channel_name", channel_name),
        ("sample_number", int(sample_number)),
        ("line", int(line)),
        ("state", bool(state)),
    ]
    return [_type_frame(TTL_TYPE), juce_json(body, style)]


def encode_word(
    code: int, previous_code: int, time_s: float, n_lines: int = 8, sample_rate: float = 30000.0, **kw
) -> list[list[bytes]]:
    """An event code word on parallel TTL lines, changed from previous_code at once: one message per line whose
    state changes (no return to zero, no strobe; the rig's schemes are written by acquisition/ttl.py)."""
    sample = int(round(time_s * sample_rate))
    out = []
    for line in range(n_lines):
        bit, before = (code >> line) & 1, (previous_code >> line) & 1
        if bit != before:
            out.append(encode_ttl(sample, line, bool(bit), sample_rate, **kw))
    return out


_SPIKE_FIELDS = {
    "event_type": str,
    "stream": str,
    "source_node": int,
    "electrode": str,
    "num_channels": int,
    "sample_rate": (int, float),
    "sample_number": int,
    "sorted_id": int,
}
_TTL_FIELDS = {
    "event_type": str,
    "stream": str,
    "source_node": int,
    "sample_rate": (int, float),
    "channel_name": str,
    "sample_number": int,
    "line": int,
    "state": (bool, int),
}
# Bounds on what a peer may claim (the GUI's own limits are far inside them).
MAX_BODY_BYTES = 1 << 20  # one event's JSON; a 384-channel spike is ~8 kB
MAX_CHANNELS = 1024  # channels of one spike electrode (tetrode 4, Neuropixels shank groups well under this)
MAX_LINES = 256  # TTL lines of one event channel
MAX_NAME_CHARS = 256  # stream, electrode and channel names
MAX_SAMPLE_RATE_HZ = 1e7
_INT_RANGES = {
    "source_node": (0, 2**31 - 1),
    "num_channels": (1, MAX_CHANNELS),
    "sorted_id": (0, 2**31 - 1),
    "sample_number": (-(2**63), 2**63 - 1),
    "line": (0, MAX_LINES - 1),
}


_AMP_KEYS = tuple(f"amp{ch}" for ch in range(1, MAX_CHANNELS + 1))
_SCAN_JSON = json.scanner.make_scanner(json.JSONDecoder())  # the C scanner json.loads uses, without its wrapping
_INT32_MAX = 2**31 - 1
_INF = float("inf")
# Set (True) in a decoded spike whose amplitudes include null or a non-finite number; no JSON key can equal it.
NONFINITE_AMPLITUDE = ("nonfinite_amplitude",)
_INT64 = (-(2**63), 2**63 - 1)


def decode_message(frames: list[bytes]) -> dict:
    """Check and decode one message; returns its JSON object (with "event_type" "spike" or "ttl").

    Raises OpenEphysFormatError, and nothing else, for any list of frames: every field has its type and a
    bounded value (sample rates finite and positive, sample numbers in int64, line and channel counts in
    range), so the functions below never fail on what this returns. A spike whose amplitudes include null or a
    non-finite number is kept, with `body[NONFINITE_AMPLITUDE] = True`.

    A spike source may send tens of thousands of these a second, so a well-formed message takes a short path
    (straight-line checks, _spike_ok and _ttl_ok, that accept only what the full check accepts); anything else
    goes through the full check (_check_fields), which names the problem.
    """
    if type(frames) is list or type(frames) is tuple:
        if len(frames) == 2 and type(frames[0]) is bytes and type(frames[1]) is bytes:
            type_frame, body_frame = frames  # what recv_multipart() gives: no copies, no checks to make
        else:
            type_frame, body_frame = _frames(frames)
    else:
        raise OpenEphysFormatError(f"frames must be a list, got {type(frames).__name__}")
    if len(type_frame) != 2:
        raise OpenEphysFormatError(f"type frame must be 2 bytes (uint16), got {len(type_frame)}")
    if len(body_frame) > MAX_BODY_BYTES:
        raise OpenEphysFormatError(f"body of {len(body_frame)} bytes, at most {MAX_BODY_BYTES}")
    kind = int.from_bytes(type_frame, "little")  # _TYPE_DTYPE: uint16, little-endian
    body = _parse_json(body_frame)
    if not isinstance(body, dict):
        raise OpenEphysFormatError("body is not a JSON object")
    if kind == SPIKE_TYPE:
        if not _spike_ok(body):
            _check_fields("spike", _SPIKE_FIELDS, body)
    elif kind == TTL_TYPE:
        if not _ttl_ok(body):
            _check_fields("ttl", _TTL_FIELDS, body)
    else:
        raise OpenEphysFormatError(f"unknown message type {kind}")
    return body


def _frames(frames) -> tuple[bytes, bytes]:
    if len(frames) != 2:
        raise OpenEphysFormatError(f"expected 2 frames, got {len(frames)}")
    raw = [f.buffer if hasattr(f, "buffer") else f for f in frames]  # zmq.Frame or bytes
    if not all(isinstance(f, (bytes, bytearray, memoryview)) for f in raw):
        raise OpenEphysFormatError("frames are not bytes")
    return bytes(raw[0]), bytes(raw[1])


def _parse_json(body_frame: bytes):
    try:
        text = body_frame.decode("utf-8")
        if text[:1] == "{":
            try:
                obj, end = _SCAN_JSON(text, 0)
                if end == len(text):
                    return obj
            except (StopIteration, ValueError):
                pass  # json.loads below says what is wrong
        return json.loads(text)
    except (UnicodeDecodeError, ValueError) as err:  # ValueError also covers integers of over 4,300 digits
        raise OpenEphysFormatError(f"body is not JSON: {str(err)[:120]}") from None
    except RecursionError:
        raise OpenEphysFormatError("body is nested too deeply") from None


def _name_ok(v) -> bool:
    return type(v) is str and len(v) <= MAX_NAME_CHARS and v.isprintable()


def _spike_ok(b: dict) -> bool:
    """A well-formed spike message (only what _check_fields accepts; False sends it there for the reason)."""
    try:
        nc, rate, sample = b["num_channels"], b["sample_rate"], b["sample_number"]
        stream, electrode = b["stream"], b["electrode"]
        if not (
            b["event_type"] == "spike"
            and type(stream) is str
            and type(electrode) is str
            and len(stream) <= MAX_NAME_CHARS
            and len(electrode) <= MAX_NAME_CHARS
            and stream.isprintable()
            and electrode.isprintable()
            and type(b["source_node"]) is int
            and 0 <= b["source_node"] <= _INT32_MAX
            and type(b["sorted_id"]) is int
            and 0 <= b["sorted_id"] <= _INT32_MAX
            and type(nc) is int
            and 1 <= nc <= MAX_CHANNELS
            and (type(rate) is float or type(rate) is int)
            and 1 <= rate <= MAX_SAMPLE_RATE_HZ
            and type(sample) is int
            and _INT64[0] <= sample <= _INT64[1]
        ):
            return False
        nonfinite = False
        for key in _AMP_KEYS[:nc]:
            amp = b[key]
            if type(amp) is float:
                if not -_INF < amp < _INF:  # NaN compares false too
                    nonfinite = True
            elif amp is None:  # JUCE writes a non-finite peak as null
                nonfinite = True
            elif type(amp) is not int:
                return False
        if nonfinite:
            b[NONFINITE_AMPLITUDE] = True
    except KeyError:
        return False
    return True


def _ttl_ok(b: dict) -> bool:
    """A well-formed TTL message (only what _check_fields accepts)."""
    try:
        rate, sample, line, state = b["sample_rate"], b["sample_number"], b["line"], b["state"]
        return (
            b["event_type"] == "ttl"
            and _name_ok(b["stream"])
            and _name_ok(b["channel_name"])
            and type(b["source_node"]) is int
            and 0 <= b["source_node"] <= _INT32_MAX
            and (type(rate) is float or type(rate) is int)
            and 1 <= rate <= MAX_SAMPLE_RATE_HZ
            and type(sample) is int
            and _INT64[0] <= sample <= _INT64[1]
            and type(line) is int
            and 0 <= line < MAX_LINES
            and (type(state) is bool or type(state) is int)
        )
    except KeyError:
        return False


def _check_fields(name: str, fields: dict, body: dict) -> None:
    """The full check of a message's fields: raises OpenEphysFormatError naming the first problem."""
    for key, typ in fields.items():
        if key not in body:
            raise OpenEphysFormatError(f"{name} message lacks {key!r}")
        value = body[key]
        if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
            raise OpenEphysFormatError(f"{name} field {key!r} has the wrong type ({type(value).__name__})")
        if isinstance(value, str) and (len(value) > MAX_NAME_CHARS or not value.isprintable()):
            raise OpenEphysFormatError(
                f"{name} field {key!r} is not a printable name of at most {MAX_NAME_CHARS} characters"
            )
        lo_hi = _INT_RANGES.get(key)
        if lo_hi is not None and not lo_hi[0] <= value <= lo_hi[1]:
            raise OpenEphysFormatError(f"{name} field {key!r} = {str(value)[:40]} is outside {list(lo_hi)}")
    if body["event_type"] != name:
        raise OpenEphysFormatError(f"type frame says {name} but event_type is {body['event_type'][:40]!r}")
    rate = body["sample_rate"]
    if not 1 <= rate <= MAX_SAMPLE_RATE_HZ:  # also refuses NaN and infinity; times stay finite
        raise OpenEphysFormatError(f"{name} sample_rate {str(rate)[:40]} is not in [1, {MAX_SAMPLE_RATE_HZ:g}] Hz")
    if name == "spike":
        for ch in range(1, body["num_channels"] + 1):
            if f"amp{ch}" not in body:
                raise OpenEphysFormatError(f"spike message lacks amp{ch}")
            amp = body[f"amp{ch}"]
            if amp is None or (type(amp) is float and not math.isfinite(amp)):
                body[NONFINITE_AMPLITUDE] = True
            elif not isinstance(amp, (int, float)) or isinstance(amp, bool):
                raise OpenEphysFormatError(f"spike message: amp{ch} is neither a number nor null")


# -- the plugin's other output formats: recognised, so the user is told which setting to change --------------------
SET_JSON = "set the Event Broadcaster's Format to JSON (the plugin's editor in the GUI's signal chain)"
UPDATE_GUI = (
    "update to Open Ephys GUI 0.6 or later (Event Broadcaster 0.2 or later) and set the Event Broadcaster's "
    "Format to JSON"
)
_V05_HEADERS = (b"spike/", b"ttl/", b"text/", b"binary/")


def other_format(frames) -> str | None:
    """Which other Event Broadcaster output a message that is not JSON-format comes from, with what to change
    ("Raw Binary ...: set the Event Broadcaster's Format to JSON ..."); None if it looks like none of them.

    Recognised: GUI 0.6+/1.0 Raw Binary (the uint16 type frame, then the event serialized: first byte 1, a
    processor event, for TTLs; 2, a spike event, for spikes); GUI 0.5.x's plugin (0.1.x): Raw binary (three
    frames: uint16 type, float64 time in s, the event), Header only (one text frame "spike/sortedid:..",
    "ttl/channel:..") and Header/JSON (that text frame, then a JSON object)."""
    if not isinstance(frames, (list, tuple)) or not frames:
        return None
    try:
        raw = [bytes(f.buffer if hasattr(f, "buffer") else f) for f in frames]
    except TypeError:
        return None
    if len(raw) == 3 and len(raw[0]) == 2 and len(raw[1]) == 8:
        return f"Raw binary of the Event Broadcaster for Open Ephys GUI 0.5.x (three frames): {UPDATE_GUI}"
    if len(raw) in (1, 2) and raw[0].startswith(_V05_HEADERS):
        kind = "Header only" if len(raw) == 1 else "Header/JSON"
        return f"{kind} output of the Event Broadcaster for Open Ephys GUI 0.5.x (a text header): {UPDATE_GUI}"
    if len(raw) == 2 and len(raw[0]) == 2 and raw[0] in (b"\x00\x00", b"\x01\x00") and len(raw[1]) >= 24:
        base = raw[1][0]
        if (base, raw[0][0]) in ((1, 0), (2, 1)) and not raw[1][:1] == b"{":
            return f"Raw Binary output of the Event Broadcaster (serialized events, not JSON): {SET_JSON}"
    return None


PLUGIN_SEND_QUEUE = 1000  # the plugin's PUB socket keeps ZeroMQ's default SNDHWM: messages beyond it are dropped


class StreamCensus:
    """What an Event Broadcaster stream carries, tallied message by message (for `cortexloop check --live`):
    streams and their rates, units heard per (stream, electrode, sorted_id), TTL channels and their lines,
    spikes with null or non-finite amplitudes, other output formats, and the most messages within any
    `burst_s` of stream time (the plugin sends a processing block's events at once, into a send queue of
    PLUGIN_SEND_QUEUE messages)."""

    def __init__(self, burst_s: float = 0.02):
        self.burst_s = burst_s
        self.messages = 0
        self.malformed = 0
        self.formats: dict[str, int] = {}
        self.streams: dict[tuple[str, float], int] = {}
        self.units: dict[tuple[str, str, int], int] = {}
        self.unsorted: dict[str, int] = {}
        self.ttl_channels: dict[tuple[str, str], dict] = {}
        self.nonfinite_amplitudes = 0
        self._bursts: dict[int, int] = {}
        self.peak_burst = 0

    def add(self, frames_list) -> None:
        for frames in frames_list:
            self.messages += 1
            try:
                b = decode_message(frames)
            except OpenEphysFormatError:
                self.malformed += 1
                other = other_format(frames)
                if other is not None:
                    self.formats[other] = self.formats.get(other, 0) + 1
                continue
            stream, rate = b["stream"], float(b["sample_rate"])
            self.streams[(stream, rate)] = self.streams.get((stream, rate), 0) + 1
            window = int(b["sample_number"] / rate // self.burst_s)
            n = self._bursts[window] = self._bursts.get(window, 0) + 1
            self.peak_burst = max(self.peak_burst, n)
            if b["event_type"] == "spike":
                if b["sorted_id"] == 0:
                    self.unsorted[stream] = self.unsorted.get(stream, 0) + 1
                else:
                    key = (stream, b["electrode"], b["sorted_id"])
                    self.units[key] = self.units.get(key, 0) + 1
                self.nonfinite_amplitudes += NONFINITE_AMPLITUDE in b
            else:
                ch = self.ttl_channels.setdefault((stream, b["channel_name"]), {"events": 0, "lines": set()})
                ch["events"] += 1
                ch["lines"].add(b["line"])


def spikes_from_messages(bodies: list[dict], layout: UnitLayout = UnitLayout()) -> tuple[np.ndarray, np.ndarray, int]:
    """Bodies from decode_message -> (neuron uint16, time_s float64, n_skipped).

    Unsorted spikes, foreign electrode names and units whose neuron index does not fit uint16 are skipped
    and counted; this never raises for bodies that decode_message returned.
    """
    neurons, times, skipped = [], [], 0
    for b in bodies:
        if b.get("event_type") != "spike":
            continue
        n = layout.neuron_of(b["electrode"], b["sorted_id"])
        if n is None or n >= 2**16:
            skipped += 1
            continue
        neurons.append(n)
        times.append(b["sample_number"] / float(b["sample_rate"]))
    return np.array(neurons, np.uint16), np.array(times, np.float64), skipped


class WordDecoder:
    """Rebuilds event code words from TTL line changes (lines that change in the same sample form one word);
    the inverse of encode_word. The rig's schemes are read by acquisition/ttl.py's TtlDecoder."""

    def __init__(self, n_lines: int = 8):
        self.n_lines = n_lines
        self.state = 0

    def feed(self, bodies: list[dict]) -> list[tuple[int, int]]:
        """TTL bodies in arrival order -> [(sample_number, word)], one per distinct sample_number."""
        words: list[tuple[int, int]] = []
        for b in bodies:
            if b.get("event_type") != "ttl" or not 0 <= b["line"] < self.n_lines:
                continue
            bit = 1 << b["line"]
            self.state = (self.state | bit) if b["state"] else (self.state & ~bit)
            if words and words[-1][0] == b["sample_number"]:
                words[-1] = (b["sample_number"], self.state)
            else:
                words.append((b["sample_number"], self.state))
        return words
