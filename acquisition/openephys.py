"""The Open Ephys GUI Event Broadcaster wire format (JSON output), as pure encode/decode functions.

The Event Broadcaster plugin publishes on a ZeroMQ PUB socket (tcp port 5557 by
default). Every event is one two-frame message:

    frame 0   uint16, native byte order (little-endian on the rig PCs): 0 = TTL event, 1 = spike
    frame 1   UTF-8 JSON object

    spike: event_type "spike", stream, source_node, electrode, num_channels,
           sample_rate, sample_number, sorted_id, amp1 .. ampN (N = num_channels, microvolts)
    TTL:   event_type "ttl", stream, source_node, sample_rate, channel_name,
           sample_number, line, state

Times travel as sample numbers on the acquisition clock: time_s = sample_number / sample_rate.
A sorted unit is the pair (electrode, sorted_id); sorted_id 0 means unsorted.
No sockets here: the acquisition source (and the virtual cortex, when it
speaks this format) does the sending and receiving.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

TTL_TYPE = 0
SPIKE_TYPE = 1
_TYPE_DTYPE = np.dtype("<u2")


class OpenEphysFormatError(ValueError):
    """A message that is not a well-formed Event Broadcaster message."""


@dataclass(frozen=True)
class UnitLayout:
    """How neuron indices map to (electrode name, sorted_id): units_per_electrode units on each electrode."""

    units_per_electrode: int = 1
    electrode_prefix: str = "Electrode "

    def unit_of(self, neuron: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        neuron = np.asarray(neuron, np.int64)
        return neuron // self.units_per_electrode + 1, neuron % self.units_per_electrode + 1

    def neuron_of(self, electrode: str, sorted_id: int) -> int | None:
        """The neuron index of a unit, or None for unsorted spikes and foreign electrode names."""
        if sorted_id < 1 or sorted_id > self.units_per_electrode or not electrode.startswith(self.electrode_prefix):
            return None
        try:
            e = int(electrode[len(self.electrode_prefix):])
        except ValueError:
            return None
        return (e - 1) * self.units_per_electrode + (sorted_id - 1) if e >= 1 else None


def _type_frame(kind: int) -> bytes:
    return np.array([kind], _TYPE_DTYPE).tobytes()


def default_amplitudes_uv(neuron: int, num_channels: int) -> list[float]:
    """A fixed waveform amplitude per unit and channel (largest on one channel), so units look distinct."""
    rng = np.random.default_rng(1_000_003 + int(neuron))
    best = rng.integers(num_channels)
    amps = rng.uniform(10.0, 40.0, num_channels)
    amps[best] = rng.uniform(60.0, 150.0)
    return [round(float(a), 2) for a in amps]


def encode_spikes(neuron: np.ndarray, time_s: np.ndarray, sample_rate: float = 30000.0, *,
                  stream: str = "virtual_cortex", source_node: int = 100, num_channels: int = 4,
                  layout: UnitLayout = UnitLayout(), amplitudes_uv: np.ndarray | None = None) -> list[list[bytes]]:
    """One [type_frame, json_frame] message per spike, in the given order.

    amplitudes_uv: (n_neurons, num_channels); default: default_amplitudes_uv per neuron.
    """
    neuron = np.asarray(neuron, np.int64)
    samples = np.rint(np.asarray(time_s, np.float64) * sample_rate).astype(np.int64)
    electrodes, sorted_ids = layout.unit_of(neuron)
    type_frame = _type_frame(SPIKE_TYPE)
    amp_cache: dict[int, list[float]] = {}
    out = []
    for n, s, e, u in zip(neuron.tolist(), samples.tolist(), electrodes.tolist(), sorted_ids.tolist()):
        if n not in amp_cache:
            amp_cache[n] = ([round(float(a), 2) for a in amplitudes_uv[n]] if amplitudes_uv is not None
                            else default_amplitudes_uv(n, num_channels))
        body = {"event_type": "spike", "stream": stream, "source_node": source_node,
                "electrode": f"{layout.electrode_prefix}{e}", "num_channels": num_channels,
                "sample_rate": sample_rate, "sample_number": s, "sorted_id": u}
        for ch, a in enumerate(amp_cache[n][:num_channels]):
            body[f"amp{ch + 1}"] = a
        out.append([type_frame, json.dumps(body).encode()])
    return out


def encode_ttl(sample_number: int, line: int, state: bool, sample_rate: float = 30000.0, *,
               stream: str = "virtual_cortex", source_node: int = 100, channel_name: str = "TTL Input") -> list[bytes]:
    """One TTL event: `line` (0-based) went high (state True) or low at sample_number."""
    body = {"event_type": "ttl", "stream": stream, "source_node": source_node, "sample_rate": sample_rate,
            "channel_name": channel_name, "sample_number": int(sample_number), "line": int(line), "state": bool(state)}
    return [_type_frame(TTL_TYPE), json.dumps(body).encode()]


def encode_word(code: int, previous_code: int, time_s: float, n_lines: int = 8, sample_rate: float = 30000.0,
                **kw) -> list[list[bytes]]:
    """An event code word on parallel TTL lines: one message per line whose state changes."""
    sample = int(round(time_s * sample_rate))
    out = []
    for line in range(n_lines):
        bit, before = (code >> line) & 1, (previous_code >> line) & 1
        if bit != before:
            out.append(encode_ttl(sample, line, bool(bit), sample_rate, **kw))
    return out


_SPIKE_FIELDS = {"event_type": str, "stream": str, "source_node": int, "electrode": str, "num_channels": int,
                 "sample_rate": (int, float), "sample_number": int, "sorted_id": int}
_TTL_FIELDS = {"event_type": str, "stream": str, "source_node": int, "sample_rate": (int, float),
               "channel_name": str, "sample_number": int, "line": int, "state": (bool, int)}


def decode_message(frames: list[bytes]) -> dict:
    """Check and decode one message; returns its JSON object (with "event_type" "spike" or "ttl")."""
    if len(frames) != 2:
        raise OpenEphysFormatError(f"expected 2 frames, got {len(frames)}")
    if len(frames[0]) != 2:
        raise OpenEphysFormatError(f"type frame must be 2 bytes (uint16), got {len(frames[0])}")
    kind = int(np.frombuffer(frames[0], _TYPE_DTYPE)[0])
    try:
        body = json.loads(bytes(frames[1]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OpenEphysFormatError(f"body is not JSON: {err}") from None
    if not isinstance(body, dict):
        raise OpenEphysFormatError("body is not a JSON object")
    expected = {SPIKE_TYPE: ("spike", _SPIKE_FIELDS), TTL_TYPE: ("ttl", _TTL_FIELDS)}.get(kind)
    if expected is None:
        raise OpenEphysFormatError(f"unknown message type {kind}")
    name, fields = expected
    for key, typ in fields.items():
        if key not in body:
            raise OpenEphysFormatError(f"{name} message lacks {key!r}")
        if not isinstance(body[key], typ) or (typ is int and isinstance(body[key], bool)):
            raise OpenEphysFormatError(f"{name} field {key!r} has the wrong type ({type(body[key]).__name__})")
    if body["event_type"] != name:
        raise OpenEphysFormatError(f"type frame says {name} but event_type is {body['event_type']!r}")
    if name == "spike":
        for ch in range(1, body["num_channels"] + 1):
            if not isinstance(body.get(f"amp{ch}"), (int, float)):
                raise OpenEphysFormatError(f"spike message lacks amp{ch}")
    return body


def spikes_from_messages(bodies: list[dict], layout: UnitLayout = UnitLayout()) -> tuple[np.ndarray, np.ndarray, int]:
    """Decoded spike bodies -> (neuron uint16, time_s float64, n_skipped) (unsorted or unknown units skipped)."""
    neurons, times, skipped = [], [], 0
    for b in bodies:
        if b.get("event_type") != "spike":
            continue
        n = layout.neuron_of(b["electrode"], b["sorted_id"])
        if n is None:
            skipped += 1
            continue
        neurons.append(n)
        times.append(b["sample_number"] / b["sample_rate"])
    return np.array(neurons, np.uint16), np.array(times, np.float64), skipped


class WordDecoder:
    """Rebuilds event code words from TTL line changes (lines that change in the same sample form one word)."""

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
