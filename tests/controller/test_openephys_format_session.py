"""A session whose Event Broadcaster is set to Raw Binary stops at once, saying which plugin setting to change."""

import struct
import threading

import zmq

from controller.config import with_overrides
from tests.helpers import openephys_rig, small_rig
from transport.launch import run_session


def test_a_session_on_the_plugins_raw_binary_output_stops_saying_to_set_json(tmp_path):
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.bind("tcp://127.0.0.1:*")
    stop = threading.Event()

    def publish():  # the plugin set to Raw Binary: each spike serialized after its type frame
        k = 0
        while not stop.wait(0.01):
            k += 1
            body = struct.pack("<BBHHHqdH", 2, 1, 100, 0, 0, 300 * k, k / 100, 1) + bytes(16 + 640)
            pub.send_multipart([struct.pack("<H", 1), body])

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    rig = with_overrides(
        openephys_rig(with_overrides(small_rig(n_trials=3, speed="realtime"), model={"kind": "baseline"})),
        cortex={"openephys": {"endpoint": pub.getsockopt_string(zmq.LAST_ENDPOINT), "virtual_cortex": False}},
        event_output={"kind": "lsl", "lsl_stream_name": "cortexloop-format-test"},
        endpoints={"openephys_pub": "off", "acquisition_events": "off"},
    )
    try:
        summary = run_session(rig, tmp_path / "s")
    finally:
        stop.set()
        thread.join(5)
        pub.close(0)
    assert summary["status"].startswith("aborted: open ephys:"), summary["status"]
    assert "Raw Binary" in summary["status"] and "set the Event Broadcaster's Format to JSON" in summary["status"]
    assert summary["trials_done"] == 0 and summary["acquisition"]["other_format_messages"] >= 3
