"""The LSL acquisition source, fed by real LSL outlets on this machine (discovery kept on it by lsl_api.cfg)."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from acquisition.lsl_source import LslAcquisitionSource, LslCodeOutlet, LslSpikeOutlet, LslStreamError, use_lsl_config
from contract import messages as m
from contract.parts import AcquisitionSource, check_part
from tests.helpers import of

pytestmark = pytest.mark.usefixtures("lsl_on_this_machine")  # tests/conftest.py


def names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"cortexloop-test-spikes-{tag}", f"cortexloop-test-codes-{tag}"


def poll_until(src: LslAcquisitionSource, cond, timeout_s: float = 5.0) -> list:
    got: list = []
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        got += src.poll(0.05)
        if cond(got):
            return got
    raise AssertionError(f"not there after {timeout_s} s: {[type(x).__name__ for x in got]}")


@pytest.fixture
def rig():
    """A spike outlet, a code outlet and a source reading them (3 neurons, 50 ms margin)."""
    spike_name, code_name = names()
    spikes, codes = LslSpikeOutlet(spike_name, n_units=3), LslCodeOutlet(code_name)
    src = LslAcquisitionSource(spike_name, code_name, n_neurons=3, margin_ms=50.0, stale_after_s=1.0)
    info = src.describe(5.0)
    assert spikes.wait_for_consumers(2.0) and codes.wait_for_consumers(2.0)
    yield spikes, codes, src, info
    src.close()
    spikes.close()
    codes.close()


def test_spikes_and_codes_come_out_as_messages_on_one_clock(rig):
    import pylsl

    spikes, codes, src, info = rig
    assert info["n_neurons"] == 3 and info["streams"] == [spikes.name, codes.name] and info["kind"] == "lsl"
    assert check_part(src, AcquisitionSource, "acquisition") is src
    t0 = pylsl.local_clock()
    units = [0, 1, 2, 7, 1, 3, 0]  # 7 and 3 are not among the 3 neurons
    times = [t0 - 0.030 + 0.004 * k for k in range(len(units))]
    spikes.push(units, times)
    codes.push(m.Codes.IMAGE_ONSET, t0 - 0.020)
    codes.push(m.Codes.IMAGE_ONSET, t0 - 0.010)  # the same code again: a separate word
    got = poll_until(
        src, lambda g: sum(len(b.neuron) for b in of(g, m.SpikeBatch)) >= 5 and len(of(g, m.EventCode)) >= 2
    )
    for msg in got:
        msg.validate()
    batches = of(got, m.SpikeBatch)
    neuron = np.concatenate([b.neuron for b in batches])
    time_s = np.concatenate([b.time_s for b in batches])
    keep = [k for k, u in enumerate(units) if u < 3]
    assert neuron.tolist() == [units[k] for k in keep]
    np.testing.assert_allclose(time_s, [times[k] for k in keep], rtol=0, atol=1e-9)  # spike times as stamped
    assert src.unknown_units == 2 and src.malformed() == 0
    assert [b.seq for b in batches] == list(range(1, len(batches) + 1))
    assert batches[-1].total_spikes == 5
    for b in batches:  # a pull that held only units not recorded is a batch with no spikes: its span still counts
        assert b.stream == spikes.name and b.t_start_s <= b.t_end_s
        assert not len(b.time_s) or (b.t_start_s <= b.time_s.min() and b.time_s.max() < b.t_end_s)
    ev = of(got, m.EventCode)
    assert [e.code for e in ev] == [m.Codes.IMAGE_ONSET] * 2 and [e.seq for e in ev] == [1, 2]
    assert all(e.clock == "acquisition" and e.trial_id == -1 and e.index == -1 and e.stream == codes.name for e in ev)
    # One machine: LSL's corrections of the two streams agree to well under a millisecond.
    np.testing.assert_allclose([e.time_s for e in ev], [t0 - 0.020, t0 - 0.010], rtol=0, atol=1e-3)
    assert src.counters()["unknown_units"] == 2


def test_code_times_are_moved_onto_the_spike_streams_clock_by_the_corrections(rig):
    import pylsl

    spikes, codes, src, _ = rig
    # As if the code stream's sender were a machine whose clock is 2.5 s behind the spike stream's sender's.
    src.code_correction_s = src.spike_correction_s + 2.5
    src.corrected_at = time.monotonic() + 60  # keep the values set here for the test
    t = pylsl.local_clock()
    codes.push(31, t)
    ev = of(poll_until(src, lambda g: of(g, m.EventCode)), m.EventCode)
    assert ev[0].code == 31 and abs(ev[0].time_s - (t + 2.5)) < 1e-9


def test_heartbeats_move_the_clock_while_the_stream_is_quiet_then_stop_when_it_is_stale(rig):
    import pylsl

    spikes, codes, src, _ = rig
    assert not of(src.poll(0.0), m.Heartbeat), "no spike yet: nothing says where the stream's clock is"
    t_spike = pylsl.local_clock() - 0.005
    spikes.push([1], [t_spike])
    hbs: list[tuple[float, m.Heartbeat]] = []
    # Quiet from here on (stale_after_s is 1 s): 0.6 s of heartbeats, or up to 0.9 s (before the stream goes
    # stale) where a busy machine held this loop up before three of them, the last 0.3 s on, were taken.
    start = time.monotonic()
    while time.monotonic() < start + 0.9:
        for msg in src.poll(0.02):
            if isinstance(msg, m.Heartbeat):
                msg.validate()
                hbs.append((pylsl.local_clock(), msg))
        if time.monotonic() >= start + 0.6 and len(hbs) >= 3 and hbs[-1][1].clock_s > t_spike + 0.3:
            break
    assert len(hbs) >= 3
    assert all(h.role == "acquisition" and h.stream == spikes.name and h.info["batch_seq"] == 1 for _, h in hbs)
    clocks = [h.clock_s for _, h in hbs]
    # Spaced by when each was made (its clock moves with the wall while no spike comes), not by when this loop,
    # which a busy machine can hold up, took them.
    assert np.diff(clocks).min() >= 0.09, "at most one heartbeat every 100 ms"
    assert clocks == sorted(clocks)
    # The clock moves with the wall while no spike comes, never past the stream's true clock less the margin.
    assert clocks[-1] > t_spike + 0.3
    for wall, h in hbs:
        assert h.clock_s <= wall - 0.050 + 1e-6
    time.sleep(1.1)
    assert not of(src.poll(0.0) + src.poll(0.05), m.Heartbeat), "stale: heartbeats stop"
    spikes.push([2], [pylsl.local_clock()])
    assert of(poll_until(src, lambda g: of(g, m.Heartbeat)), m.SpikeBatch), "spikes again: heartbeats again"
    spikes.close()  # the recording system goes away: polls go on, quietly, until the stream is stale
    codes.close()
    assert not of(src.poll(0.05) + src.poll(0.05), m.SpikeBatch)


def test_malformed_samples_are_counted_never_mapped():
    import pylsl

    spike_name, code_name = names()
    # A float spike channel and a string marker stream, as other recording systems publish them.
    s_out = pylsl.StreamOutlet(pylsl.StreamInfo(spike_name, "Spikes", 1, pylsl.IRREGULAR_RATE, pylsl.cf_double64))
    c_out = pylsl.StreamOutlet(pylsl.StreamInfo(code_name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string))
    src = LslAcquisitionSource(spike_name, code_name, n_neurons=4, margin_ms=0.0)
    try:
        src.describe(5.0)
        s_out.wait_for_consumers(2.0)
        c_out.wait_for_consumers(2.0)
        t = pylsl.local_clock()
        s_out.push_chunk([[2.0], [1.5], [-1.0], [float("nan")], [3.0], [4.0]], [t, t, t, t, t + 0.001, t + 0.002])
        for marker in ("20", "start", "-5", " 31 "):
            c_out.push_sample([marker], t)
        got = poll_until(
            src,
            lambda g: (
                len(of(g, m.EventCode)) >= 2
                and src.malformed_codes >= 2
                and sum(len(b.neuron) for b in of(g, m.SpikeBatch)) >= 2
            ),
        )
        assert np.concatenate([b.neuron for b in of(got, m.SpikeBatch)]).tolist() == [2, 3]
        assert [e.code for e in of(got, m.EventCode)] == [20, 31]
        assert src.counters() == {
            "spikes": 2,
            "batches": src.batch_seq,
            "codes": 2,
            "unknown_units": 1,
            "malformed_units": 3,
            "malformed_codes": 2,
            "reconnects": 0,
            "outlet_changes": 0,
        }
        assert src.malformed() == 5
    finally:
        src.close()


def test_wrong_channel_count_is_refused_naming_the_stream():
    import pylsl

    spike_name, code_name = names()
    two = pylsl.StreamOutlet(pylsl.StreamInfo(spike_name, "Spikes", 2, pylsl.IRREGULAR_RATE, pylsl.cf_int32))
    codes = LslCodeOutlet(code_name)
    src = LslAcquisitionSource(spike_name, code_name, n_neurons=4)
    with pytest.raises(RuntimeError) as err:
        src.describe(3.0)
    assert type(err.value).__name__ == "SessionAbort", "the engine ends the session with the reason"
    assert isinstance(err.value.__cause__, LslStreamError)
    assert f"LSL spike stream '{spike_name}' has 2 channels" in str(err.value)
    del two, codes


def test_a_string_spike_stream_and_a_missing_stream_are_refused():
    import pylsl

    spike_name, code_name = names()
    strings = pylsl.StreamOutlet(pylsl.StreamInfo(spike_name, "Spikes", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string))
    with pytest.raises(RuntimeError, match=f"'{spike_name}' carries strings"):
        # refused before the code stream is looked for
        LslAcquisitionSource(spike_name, code_name, n_neurons=4).describe(3.0)
    with pytest.raises(RuntimeError, match=f"LSL stream '{spike_name}-none' not found"):
        LslAcquisitionSource(spike_name + "-none", code_name, n_neurons=4).describe(0.3)
    del strings


def test_discovery_is_kept_on_this_machine(lsl_on_this_machine):
    text = lsl_on_this_machine.read_text()
    assert "ResolveScope = machine" in text and "IPv6 = disable" in text


def test_bad_arguments():
    with pytest.raises(ValueError, match="both named"):
        LslAcquisitionSource("a", "a", 3)
    with pytest.raises(ValueError, match="n_neurons = 0"):
        LslAcquisitionSource("a", "b", 0)
    with pytest.raises(ValueError, match="resolve_scope"):
        use_lsl_config("/tmp", resolve_scope="planet")
    out = LslSpikeOutlet(names()[0])
    with pytest.raises(ValueError, match="2 units but 1 times"):
        out.push([1, 2], [0.0])
