"""The LSL source around its contract: duplicate stream names, an outlet that goes away and comes back (or is
replaced), and a resumed recording's stream label. Every outlet is made with pylsl directly, as a recording
system's bridge would make it; discovery is kept on this machine (tests/conftest.py)."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from acquisition.lsl_source import LslAcquisitionSource
from contract import messages as m
from contract.parts import SessionAbort
from controller import protocol as p
from tests.helpers import of

pylsl = pytest.importorskip("pylsl")
pytestmark = pytest.mark.usefixtures("lsl_on_this_machine")  # tests/conftest.py


def names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"cortexloop-faults-spikes-{tag}", f"cortexloop-faults-codes-{tag}"


def spike_outlet(name: str, source_id: str) -> pylsl.StreamOutlet:
    """A spike stream as pylsl's documentation makes one: one int32 channel, irregular rate."""
    return pylsl.StreamOutlet(pylsl.StreamInfo(name, "Spikes", 1, pylsl.IRREGULAR_RATE, pylsl.cf_int32, source_id))


def code_outlet(name: str) -> pylsl.StreamOutlet:
    return pylsl.StreamOutlet(pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_int32, name))


def poll_until(src: LslAcquisitionSource, cond, timeout_s: float = 10.0, push=None) -> list:
    got: list = []
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if push is not None:
            push()
        got += src.poll(0.02)
        if cond(got):
            return got
    raise AssertionError(f"not there after {timeout_s} s: {[type(x).__name__ for x in got]}")


def test_two_outlets_of_one_name_are_refused_naming_each(lsl_on_this_machine):
    spike_name, code_name = names()
    # An outlet left from an earlier run, and the new one: the same name, the same source_id.
    stale, new, codes = spike_outlet(spike_name, "rig-a"), spike_outlet(spike_name, "rig-b"), code_outlet(code_name)
    for _ in range(3):  # not one of them read at random: refused every time
        src = LslAcquisitionSource(spike_name, code_name, n_neurons=4)
        with pytest.raises(SessionAbort) as err:
            src.describe(5.0)
        text = str(err.value)
        assert f"LSL stream '{spike_name}': 2 outlets carry this name" in text
        assert "source_id 'rig-a'" in text and "source_id 'rig-b'" in text
        assert text.count("host '") == 2 and text.count("created at") == 2
        assert src.spike_inlet is None and src.code_inlet is None
    del stale
    # The stale one gone: the name is unique again and the stream opens.
    src = LslAcquisitionSource(spike_name, code_name, n_neurons=4)
    try:
        info = src.describe(5.0)
        assert info["spike_stream"]["source_id"] == "rig-b"
    finally:
        src.close()
    del new, codes


def test_a_duplicate_code_stream_is_refused_too():
    spike_name, code_name = names()
    spikes, a, b = spike_outlet(spike_name, "s"), code_outlet(code_name), code_outlet(code_name)
    with pytest.raises(SessionAbort, match=f"LSL stream '{code_name}': 2 outlets carry this name"):
        LslAcquisitionSource(spike_name, code_name, n_neurons=4).describe(5.0)
    del spikes, a, b


def test_an_outlet_replaced_under_the_same_name_is_a_reconnect_whose_gap_is_lost(engine):
    """A killed outlet replaced by a new one of the same name and source_id (liblsl would recover to it silently):
    the reconnect is counted, the first batch after it skips a sequence number and starts at its first spike, and
    the engine marks the gap lost, so a response window over it is invalid."""
    spike_name, code_name = names()
    first, codes = spike_outlet(spike_name, "rig"), code_outlet(code_name)
    src = LslAcquisitionSource(spike_name, code_name, n_neurons=4, margin_ms=20.0, stale_after_s=30.0)
    try:
        src.describe(5.0)
        assert first.wait_for_consumers(2.0)
        t0 = pylsl.local_clock()
        first.push_chunk([[0], [1], [2]], [t0 - 0.03, t0 - 0.02, t0 - 0.01])
        before = of(poll_until(src, lambda g: sum(len(b.neuron) for b in of(g, m.SpikeBatch)) >= 3), m.SpikeBatch)
        last_end = before[-1].t_end_s
        del first  # the bridge dies
        gone = pylsl.local_clock()
        lost = poll_until(src, lambda g: "spike" in src.lost, timeout_s=5.0)
        assert not of(lost, m.SpikeBatch)
        quiet = [msg for _ in range(10) for msg in src.poll(0.02)]
        assert not of(quiet, m.Heartbeat), "while the spike stream is lost nothing says its clock moved"
        second = spike_outlet(spike_name, "rig")  # the bridge restarted: same name, same source_id
        missed = pylsl.local_clock()
        second.push_sample([3], missed)  # pushed before the source's new inlet opens: never delivered

        def push():
            second.push_sample([1], pylsl.local_clock())

        after = of(
            poll_until(src, lambda g: of(g, m.SpikeBatch), timeout_s=15.0, push=push),
            m.SpikeBatch,
        )
        assert src.counters()["reconnects"] == 1 and src.counters()["outlet_changes"] == 1
        b = after[0]
        assert b.seq == before[-1].seq + 2, "one sequence number skipped: the batch never delivered"
        assert b.t_start_s == b.time_s.min() > missed > gone > last_end
        assert 3 not in b.neuron.tolist()
        # The engine's own rule: the skipped batch covered (end of the last batch, this batch's start).
        for batch in before + after:
            engine._on_acquisition(batch)
        st = engine.streams[src.stream]
        assert st.lost_batches == 1 and st.lost_intervals == [(last_end, b.t_start_s)]
        starts = np.array([last_end - 0.2, gone, b.t_start_s + 0.001])
        valid = p.windows_valid(starts, starts + 0.15, st.lost_intervals, np.ones(3, bool))
        assert valid.tolist() == [True, False, True]
        assert codes.have_consumers()
    finally:
        src.close()


def test_a_resumed_recording_is_a_stream_of_its_own():
    spike_name, code_name = names()
    spikes, codes = spike_outlet(spike_name, "rig"), code_outlet(code_name)
    first = LslAcquisitionSource(spike_name, code_name, n_neurons=2, margin_ms=0.0)
    resumed = LslAcquisitionSource(spike_name, code_name, n_neurons=2, margin_ms=0.0, epoch=1)
    try:
        assert first.describe(5.0)["stream_label"] == spike_name
        assert resumed.describe(5.0)["stream_label"] == f"{spike_name}-1"
        assert spikes.wait_for_consumers(2.0)
        spikes.push_sample([1], pylsl.local_clock())
        a = of(poll_until(first, lambda g: of(g, m.SpikeBatch) and of(g, m.Heartbeat)), m.SpikeBatch)
        b = poll_until(resumed, lambda g: of(g, m.SpikeBatch) and of(g, m.Heartbeat))
        assert a[0].stream == spike_name and a[0].seq == 1
        assert of(b, m.SpikeBatch)[0].stream == f"{spike_name}-1" and of(b, m.SpikeBatch)[0].seq == 1
        assert {h.stream for h in of(b, m.Heartbeat)} == {f"{spike_name}-1"}
    finally:
        first.close()
        resumed.close()
    with pytest.raises(ValueError, match="epoch = -1"):
        LslAcquisitionSource(spike_name, code_name, n_neurons=2, epoch=-1)
    del spikes, codes


def test_discovery_is_kept_on_this_machine_only_for_a_rig_all_on_it(tmp_path):
    from acquisition.lsl_source import lsl_discovery
    from controller.config import load_rig, with_overrides

    lsl = load_rig("rigs/lsl.toml")  # its endpoints name other machines: liblsl's own search
    assert lsl_discovery(lsl, tmp_path / "a", {}) is None and not (tmp_path / "a").exists()
    local = with_overrides(
        lsl,
        endpoints={"presenter_plans": "tcp://127.0.0.1:5601", "controller_inbox": "auto", "model": "ipc:///tmp/m"},
        security={"server_key": "", "client_key": "", "authorized_keys": ""},
    )
    env: dict = {}
    path = lsl_discovery(local, tmp_path / "b", env)
    assert path == tmp_path / "b" / "lsl_api.cfg" and env == {"LSLAPICFG": str(path)}
    assert "ResolveScope = machine" in path.read_text()
    assert lsl_discovery(local, tmp_path / "c", {"LSLAPICFG": "/etc/lab.cfg"}) is None, "the lab's own wins"
    one_remote = with_overrides(lsl, endpoints={"presenter_plans": "tcp://127.0.0.1:5601", "controller_inbox": "auto"})
    assert lsl_discovery(one_remote, tmp_path / "d", {}) is None  # the model on tcp://gpu-server
    sim = load_rig("rigs/sim.toml")  # no LSL at all
    assert sim.cortex.source != "lsl" and lsl_discovery(sim, tmp_path / "e", {}) is None
