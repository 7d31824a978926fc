"""The Event Broadcaster's JSON as the plugin really writes it: JUCE's JSON::toString of a DynamicObject.

The expected texts below are written out by hand from the plugin's and JUCE's rules (multi-line, CRLF, two-space
indent, properties in the order the plugin sets them, doubles as JUCE serialises them, `state` a bool, null for
a non-finite number), for JUCE 6 (GUI 0.6.x, Event Broadcaster 0.2.x) and JUCE 8 (GUI 1.0.x, 0.3.x), so the
publisher the simulated rig uses is held to them; then the source reads both through a real socket.
"""

import json
import struct
import time

import numpy as np
import pytest
import zmq

from acquisition.config import OpenEphysConfig, TtlConfig
from acquisition.openephys import decode_message, encode_spikes, encode_ttl, juce_double, juce_json
from acquisition.openephys_source import OpenEphysSource
from contract import messages as m
from controller.clocks import VirtualClock

TTL_TEXT = (
    '{\r\n  "event_type": "ttl",\r\n  "stream": "Rhythm Data",\r\n  "source_node": 100,\r\n'
    '  "sample_rate": 3333.330078125,\r\n  "channel_name": "TTL Input",\r\n  "sample_number": 123456,\r\n'
    '  "line": 3,\r\n  "state": true\r\n}'
)


def spike_text(amp1: str) -> str:
    return (
        '{\r\n  "event_type": "spike",\r\n  "stream": "Rhythm Data",\r\n  "source_node": 100,\r\n'
        '  "electrode": "Tetrode 2",\r\n  "num_channels": 4,\r\n  "sample_rate": 30000.0,\r\n'
        '  "sample_number": 9000,\r\n  "sorted_id": 3,\r\n'
        f'  "amp1": {amp1},\r\n  "amp2": null,\r\n  "amp3": 0.0,\r\n  "amp4": -12.5\r\n}}'
    )


@pytest.mark.parametrize("style", ["juce6", "juce8"])
def test_a_ttl_event_is_written_as_the_plugin_writes_it(style):
    frames = encode_ttl(123456, 3, True, 3333.33, stream="Rhythm Data", style=style)
    assert frames[0] == struct.pack("<H", 0)
    assert frames[1].decode() == TTL_TEXT  # the float32 rate, widened: 3333.330078125 in both JUCE versions


@pytest.mark.parametrize("style, amp1", [("juce6", "45.66999816894531"), ("juce8", "45.669998168945312")])
def test_a_spike_is_written_as_the_plugin_writes_it(style, amp1):
    # Sorted unit 3 on Tetrode 2: the Spike Sorter's counter is shared by all electrodes.
    amps = np.array([[45.67, np.nan, 0.0, -12.5]])
    (frames,) = encode_spikes(
        np.array([0]),
        np.array([0.3]),
        30000.0,
        stream="Rhythm Data",
        amplitudes_uv=amps,
        layout=_TetrodeTwoUnitThree(),
        style=style,
    )
    assert frames[0] == struct.pack("<H", 1)
    assert frames[1].decode() == spike_text(amp1)


class _TetrodeTwoUnitThree:
    electrode_prefix = "Tetrode "

    def unit_of(self, neuron):
        return np.array([2]), np.array([3])


def test_doubles_as_juce_serialises_them():
    # JUCE 6's own serialisation table (juce_String.cpp's unit test), and the same numbers at JUCE 8's
    # JSON::toString default of 15 decimals.
    juce6 = {
        364.0: "364.0",
        1e7: "1.0e7",
        12345678901.0: "1.2345678901e10",
        1234567890123456.7: "1.234567890123457e15",
        1234567.8901234567: "1.234567890123457e6",
        123456.78901234567: "123456.7890123457",
        1234.5678901234567: "1234.567890123457",
        1.2345678901234567: "1.234567890123457",
        0.12345678901234567: "0.1234567890123457",
        0.00012345678901234567: "0.0001234567890123457",
        0.0000012345678901234567: "1.234567890123457e-6",
    }
    for x, text in juce6.items():
        assert juce_double(x, "juce6") == text and juce_double(-x, "juce6") == "-" + text
    assert juce_double(1234.5678901234567, "juce8") == "1234.567890123456664"  # 15 decimals of the double
    assert juce_double(0.5, "juce8") == "0.5" and juce_double(30000.0, "juce8") == "30000.0"
    assert juce_double(0.0) == "0.0" and juce_double(float("inf")) == "null" and juce_double(float("nan")) == "null"


@pytest.mark.parametrize("style", ["juce6", "juce8"])
def test_names_outside_ascii_are_written_as_each_juce_writes_them(style):
    text = juce_json([("electrode", "Électrode 1"), ("stream", 'a"b\\c\td')], style).decode()
    escaped = "\\u00c9lectrode 1" if style == "juce6" else "Électrode 1"
    assert text == f'{{\r\n  "electrode": "{escaped}",\r\n  "stream": "a\\"b\\\\c\\td"\r\n}}'
    assert json.loads(text) == {"electrode": "Électrode 1", "stream": 'a"b\\c\td'}


@pytest.mark.parametrize("style", ["juce6", "juce8"])
def test_the_source_reads_what_the_plugin_writes_through_a_real_socket(style):
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.bind("tcp://127.0.0.1:*")
    units = [["Electrode 1", 1], ["Electrode 2", 2], ["Electrode 2", 3]]
    src = OpenEphysSource(
        OpenEphysConfig(units=units, clock_margin_ms=10.0),
        TtlConfig(),
        pub.getsockopt_string(zmq.LAST_ENDPOINT),
        30000.0,
        VirtualClock(),
    )
    try:
        assert src.describe(5.0)["n_neurons"] == 3
        neuron = np.array([0, 1, 2, 2, 0])
        t = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
        amps = np.full((3, 4), 20.0)
        amps[2, 1] = np.nan  # unit 3's peak not finite: sent as null, kept
        layout = _TwoPerElectrode()
        frames = encode_spikes(neuron, t, 30000.0, amplitudes_uv=amps, layout=layout, style=style)
        frames += [encode_ttl(s, 2, st, 30000.0, style=style) for s, st in ((16500, True), (16650, False))]
        frames += encode_spikes(np.array([0]), np.array([2.0]), 30000.0, layout=layout, style=style)
        for f in frames:
            pub.send_multipart(f)
        got, end = [], time.monotonic() + 10
        while sum(len(b.neuron) for b in got if isinstance(b, m.SpikeBatch)) < 6 and time.monotonic() < end:
            got += src.poll(0.05)
    finally:
        src.close()
        pub.close(0)
    batches = [b for b in got if isinstance(b, m.SpikeBatch)]
    assert np.concatenate([b.neuron for b in batches]).tolist() == [0, 1, 2, 2, 0, 0]
    assert [(e.code, e.time_s) for e in got if isinstance(e, m.EventCode)] == [(4, 16500 / 30000.0)]
    assert src.counters()["nonfinite_amplitude_spikes"] == 2 and src.malformed() == 0
    assert all(decode_message(f)["sample_rate"] == 30000.0 for f in frames)


class _TwoPerElectrode:
    """Electrode 1 holds unit 1, electrode 2 units 2 and 3 (the Spike Sorter's one counter)."""

    electrode_prefix = "Electrode "

    def unit_of(self, neuron):
        neuron = np.asarray(neuron)
        return np.where(neuron == 0, 1, 2), neuron + 1
