"""`cortexloop check RIG --live` on an Open Ephys rig: the units, channels, rates and format it hears, against the
rig file (the simulated rig's Open Ephys stream in its own process; a plain PUB for the plugin's Raw Binary)."""

import json
import struct
import threading

import numpy as np
import zmq

from acquisition.openephys import encode_spikes
from controller.config import with_overrides
from controller.live_check import check_live
from tests.helpers import OPENEPHYS_NEURONS, openephys_rig, serve, small_rig
from transport.launch import prepare_session_dir


def test_the_units_and_channels_heard_are_listed_beside_the_rig_file(tmp_path):
    rig = with_overrides(
        openephys_rig(small_rig(speed="realtime"), ttl_channel="TTL Input"),
        display={"presenter": "headless"},
        rehearsal={"other_ttl_channel_hz": 20.0},
    )
    prepare_session_dir(rig, tmp_path / "s")
    endpoints = json.loads((tmp_path / "s" / "endpoints.json").read_text())
    cortex = serve("cortex", tmp_path / "s")
    try:
        wait_for_a_message(endpoints["openephys_pub"])  # the cortex process publishing (its start takes seconds)
        good: list[str] = []
        ok = check_live(rig, endpoints, seconds=2.0, out=good.append)
    finally:
        cortex.terminate()
        cortex.wait(10)
    text = "\n".join(good)
    assert ok, text
    units = next(x for x in good if " units:" in x)
    assert units.startswith("OK") and f"{OPENEPHYS_NEURONS} in the map, {OPENEPHYS_NEURONS} heard" in units
    assert "Electrode 3" in text and "sorted_id 3" in text and "neuron 2" in text
    streams = next(x for x in good if " streams:" in x)
    assert streams.startswith("OK") and "'virtual-cortex' at 30000 Hz" in streams
    ttl = next(x for x in good if "ttl channels:" in x)
    # The event output's test code went out on the code channel, listed beside the other channel heard.
    assert ttl.startswith("OK") and "'TTL Input': lines [0], 2 events (code words)" in ttl
    assert "'Crossing Detector': lines [0, 1]" in ttl
    assert next(x for x in good if "send queue:" in x).startswith("OK")


def wait_for_a_message(endpoint: str, timeout_s: float = 60.0) -> None:
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    try:
        assert sub.poll(timeout_s * 1000), f"nothing published on {endpoint} in {timeout_s} s"
    finally:
        sub.close(0)


def check_against(message, units=None) -> list[str]:
    """check --live on a live-rig file whose Event Broadcaster is a plain PUB sending message(k), k = 1, 2, ..
    every 10 ms (no event output answers it)."""
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.bind("tcp://127.0.0.1:*")
    stop = threading.Event()

    def publish():
        k = 0
        while not stop.wait(0.01):
            k += 1
            pub.send_multipart(message(k))

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    oe = {"endpoint": pub.getsockopt_string(zmq.LAST_ENDPOINT), "virtual_cortex": False}
    rig = with_overrides(
        openephys_rig(small_rig(speed="realtime")),
        cortex={"openephys": {**oe, **({"units": units} if units else {})}},
        display={"presenter": "headless"},
        endpoints={"openephys_pub": "off", "acquisition_events": "off"},
    )
    lines: list[str] = []
    try:
        assert not check_live(rig, {}, seconds=2.0, wait_s=5.0, out=lines.append)
    finally:
        stop.set()
        thread.join(5)
        pub.close(0)
    return lines


def test_a_per_electrode_unit_map_fails_listing_the_units_heard():
    # The GUI's Spike Sorter numbers units 1..4 over electrodes 1..4; a map copied from a per-electrode example
    # holds ("Electrode k", 1) for every k.
    lines = check_against(
        lambda k: encode_spikes(np.array([k % 4]), np.array([k / 100]), 30000.0)[0],
        units=[[k + 1, 1] for k in range(4)],
    )
    text = "\n".join(lines)
    units = next(x for x in lines if " units:" in x)
    assert units.startswith("FAIL") and "4 in the map, 1 heard" in units, text
    assert any("Electrode 2" in x and "sorted_id 1 " in x and "SILENT" in x for x in lines), text
    assert any("Electrode 2" in x and "sorted_id 2 " in x and "not in the map" in x for x in lines), text


def test_the_plugins_raw_binary_output_fails_saying_which_setting_to_change():
    def raw_binary_ttl(k):  # the plugin set to Raw Binary: each TTL event serialized after its type frame
        body = struct.pack("<BBHHHqd", 1, 3, 100, 0, 0, 300 * k, k / 100) + struct.pack("<BBQ", 2, k % 2, 4)
        return [struct.pack("<H", 0), body]

    lines = check_against(raw_binary_ttl)
    text = "\n".join(lines)
    assert lines[0].startswith("FAIL acquisition:") and "Raw Binary" in lines[0], text
    assert "set the Event Broadcaster's Format to JSON" in lines[0]
    assert any(x.startswith("FAIL format:") for x in lines), text


def test_a_stream_at_another_rate_fails_naming_both_rates():
    lines = check_against(lambda k: encode_spikes(np.array([0]), np.array([k / 100]), 3333.33)[0])
    text = "\n".join(lines)
    assert lines[0].startswith("FAIL acquisition:") and "at 3333.330078 Hz" in lines[0], text
    assert "session.acquisition_sample_rate_hz = 30000 Hz" in lines[0]
    streams = next(x for x in lines if " streams:" in x)
    assert streams.startswith("FAIL") and "'virtual_cortex' at 3333.330078 Hz" in streams, text
    assert not any(" units:" in x for x in lines)  # none of the session's clock: its units are not listed
