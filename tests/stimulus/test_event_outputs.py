"""Event codes out on hardware: TTL words on a (fake) parallel port and a pyserial loop:// port, LSL markers read
back by a real inlet on this machine."""

from __future__ import annotations

import statistics
import threading
import time
import uuid

import numpy as np
import pytest
from pydantic import ValidationError

from stimulus.event_outputs import (
    EventOutputConfig,
    LslEventOutput,
    ParallelEventOutput,
    SerialEventOutput,
    make_event_output,
)
from tests.helpers import wait_idle


class RecordingPort:
    """A parallel port that records (monotonic time, value) of every setData, as a logic analyser would."""

    def __init__(self, fail_after: int | None = None):
        self.writes: list[tuple[float, int]] = []
        self.fail_after = fail_after
        self.lock = threading.Lock()

    def setData(self, value: int) -> None:  # noqa: N802 (psychopy's name)
        with self.lock:
            if self.fail_after is not None and len(self.writes) >= self.fail_after:
                raise OSError("port unplugged")
            self.writes.append((time.monotonic(), int(value)))

    def values(self) -> list[int]:
        return [v for _, v in self.writes]


def pulses(writes: list[tuple[float, int]]) -> list[tuple[int, float, float]]:
    """(word, high duration, zero held before it) for each word, from the recorded line changes."""
    out = []
    for k in range(1, len(writes) - 1):
        (t_prev, v_prev), (t, v), (t_next, v_next) = writes[k - 1], writes[k], writes[k + 1]
        if v and v_prev == 0 and v_next == 0:
            out.append((v, t_next - t, t - t_prev))
    return out


# -- parallel port (fake) --------------------------------------------------------------------------------------
def test_parallel_word_returns_to_zero_after_pulse_without_blocking_the_caller():
    # A long pulse, so that a write that waited for it could not pass for one delayed by a busy machine: the
    # bounds below are half the pulse, or the pulse and a quarter of a second.
    pulse_s = 0.200
    port = RecordingPort()
    out = ParallelEventOutput("fake", pulse_ms=pulse_s * 1000, port=port)
    t0 = time.monotonic()
    out.write(20, 0.0, 1, 0, "h")
    write_s = time.monotonic() - t0
    assert port.values() == [0, 20]  # zero at open, then the word at once: the edge is the write
    wait_idle(out)
    out.close()
    assert port.values() == [0, 20, 0, 0]  # back to zero by the thread; close leaves it at zero
    high_s = port.writes[2][0] - port.writes[1][0]
    assert write_s < pulse_s / 2, (
        f"write took {write_s * 1000:.2f} ms with pulse_ms 200: it must not wait for the pulse"
    )
    # At least the pulse (less the microseconds between the thread's clock read and the port's stamp).
    assert pulse_s - 0.0001 <= high_s < pulse_s + 0.250, f"word held {high_s * 1000:.2f} ms for a 200 ms pulse"


def test_parallel_codes_closer_than_the_spacing_are_queued_in_order_never_merged():
    port = RecordingPort()
    pulse_ms = 20.0  # five words take at least 4 x 2 x pulse_ms to go out: a write that waited could not hide
    out = ParallelEventOutput("fake", pulse_ms=pulse_ms, port=port)
    codes = [10, 20, 20, 20, 30]
    t0 = time.monotonic()
    for c in codes:  # all in the same instant: as if five codes came in one frame
        out.write(c, 0.0, 1, -1, "")
    write_s = time.monotonic() - t0
    wait_idle(out)
    stats = out.stats()
    out.close()
    seen = pulses(port.writes)
    assert [w for w, _, _ in seen] == codes, port.values()
    assert all(v == 0 for v in port.values()[2::2]), "every word is followed by the zero word"
    highs = [h for _, h, _ in seen]
    zeros = [z for _, _, z in seen[1:]]  # the first word's zero is the open
    # Each at least the pulse (less the microseconds between the thread's clock read and the port's stamp).
    assert min(highs) >= pulse_ms / 1000 - 0.0001 and min(zeros) >= pulse_ms / 1000 - 0.0001, (highs, zeros)
    assert stats["words"] == 5 and stats["delayed_words"] == 4
    # the fifth word waited for four spacings of 2 x pulse_ms
    assert stats["max_delay_ms"] >= 4 * 2 * pulse_ms
    # Five writes that waited for the lines would take 8 x pulse_ms; half of that allows for a busy machine.
    assert write_s < 4 * pulse_ms / 1000, f"five writes took {write_s * 1000:.2f} ms"
    print(
        f"\npulse 20 ms: highs {[round(h * 1e3, 2) for h in highs]} ms, zeros {[round(z * 1e3, 2) for z in zeros]} ms"
    )


def test_parallel_pulse_width_over_many_words():
    """Words spaced as onsets are (no queueing): how long each stays up, as measured on this machine."""
    port = RecordingPort()
    out = ParallelEventOutput("fake", pulse_ms=2.0, port=port)
    write_times = []
    for k in range(40):
        t0 = time.monotonic()
        out.write(20, 0.0, k, 0, "")
        write_times.append(time.monotonic() - t0)
        time.sleep(0.006)
    wait_idle(out)
    stats = out.stats()
    out.close()
    highs = [h for _, h, _ in pulses(port.writes)]
    assert len(highs) == 40, port.values()
    # At least the pulse asked for, less the few microseconds between the thread's clock read and the port's stamp.
    assert min(highs) >= 0.002 - 0.0001, highs
    # The thread returns a word to zero when it wakes at the pulse's end: late only by the scheduler, which on a
    # busy machine is milliseconds (the median), never a whole spacing of the words.
    assert statistics.median(highs) < 0.002 + 0.020, highs
    # A word is delayed only when the thread returned the one before it to zero late (the machine was busy).
    assert stats["delayed_words"] < 40, stats
    print(
        f"\npulse 2 ms, 40 words: {stats['delayed_words']} delayed (max {stats['max_delay_ms']} ms), "
        f"high median {statistics.median(highs) * 1e3:.3f} ms, "
        f"max {max(highs) * 1e3:.3f} ms; write median {statistics.median(write_times) * 1e6:.1f} us, "
        f"max {max(write_times) * 1e6:.1f} us"
    )


def test_strobe_raises_data_lines_then_the_strobe_and_carries_code_zero():
    port = RecordingPort()
    out = ParallelEventOutput("fake", pulse_ms=1.0, n_lines=8, scheme="strobe", strobe_line=7, port=port)
    out.write(5, 0.0, 1, -1, "")
    wait_idle(out)
    out.write(5, 0.0, 1, -1, "")
    wait_idle(out)
    out.write(0, 0.0, 1, -1, "")  # with a strobe, zero is a word like any other
    wait_idle(out)
    out.close()
    assert port.values() == [0, 5, 5 | 128, 0, 5, 5 | 128, 0, 0, 128, 0, 0]


def test_strobe_line_among_the_data_lines_shifts_the_bits_past_it():
    port = RecordingPort()
    out = ParallelEventOutput("fake", pulse_ms=1.0, n_lines=4, scheme="strobe", strobe_line=1, port=port)
    out.write(0b111, 0.0, 1, -1, "")  # bits 0, 1, 2 on lines 0, 2, 3 (line 1 is the strobe)
    wait_idle(out)
    with pytest.raises(ValueError, match="3 data lines"):
        out.write(8, 0.0, 1, -1, "")
    out.close()
    assert port.values()[:4] == [0, 0b1101, 0b1111, 0]


def test_codes_that_do_not_fit_are_refused_at_write_and_when_made():
    port = RecordingPort()
    out = ParallelEventOutput("fake", pulse_ms=1.0, n_lines=4, port=port)
    with pytest.raises(ValueError, match="event code 16 does not fit.*1..15"):
        out.write(16, 0.0, 1, -1, "")
    with pytest.raises(ValueError, match="0 is the idle word"):
        out.write(0, 0.0, 1, -1, "")
    out.close()
    assert port.values() == [0, 0], "nothing was raised"
    cfg = EventOutputConfig(kind="serial", serial_url="loop://", n_lines=5)
    with pytest.raises(ValueError, match="event code 40 does not fit"):
        make_event_output(cfg, codes=[10, 20, 30, 31, 40])


def test_a_port_that_fails_is_reported_at_the_next_write():
    port = RecordingPort(fail_after=2)  # the zero at open and one word go out; the return to zero fails
    out = ParallelEventOutput("/dev/parport9", pulse_ms=1.0, port=port)
    out.write(20, 0.0, 1, 0, "")
    time.sleep(0.05)
    with pytest.raises(RuntimeError, match="parallel port /dev/parport9.*port unplugged"):
        out.write(20, 0.0, 1, 1, "")
    port = RecordingPort(fail_after=1)  # the zero at open goes out; the first word fails, in the caller
    out = ParallelEventOutput("/dev/parport8", pulse_ms=1.0, port=port)
    for _ in range(2):  # and stays failed
        with pytest.raises(RuntimeError, match="parallel port /dev/parport8.*port unplugged"):
            out.write(20, 0.0, 1, 0, "")


def test_a_parallel_port_that_is_not_there_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    if "psychopy" not in sys.modules:
        monkeypatch.setenv("HOME", str(tmp_path))  # PsychoPy writes its preferences under $HOME at import
    cfg = EventOutputConfig(kind="parallel", parallel_address="/dev/parport7")
    with pytest.raises(RuntimeError, match="parallel port /dev/parport7: could not be opened"):
        make_event_output(cfg, codes=[10, 20])


# -- serial TTL box (pyserial loop://) ---------------------------------------------------------------------------
def test_serial_repeated_codes_survive_each_byte_followed_by_zero():
    out = make_event_output(
        EventOutputConfig(kind="serial", serial_url="loop://", pulse_ms=1.0), codes=[10, 20, 30, 31]
    )
    assert isinstance(out, SerialEventOutput)
    for c in (10, 20, 20, 30):
        out.write(c, 0.0, 1, -1, "")
    wait_idle(out)
    got = out.port.read(out.port.in_waiting)
    out.close()
    assert list(got) == [0, 10, 0, 20, 0, 20, 0, 30, 0]


def test_serial_strobe_bytes():
    out = SerialEventOutput("loop://", pulse_ms=1.0, n_lines=8, scheme="strobe", strobe_line=7)
    out.write(20, 0.0, 1, -1, "")
    out.write(20, 0.0, 1, -1, "")
    wait_idle(out)
    got = out.port.read(out.port.in_waiting)
    out.close()
    assert list(got) == [0, 20, 20 | 128, 0, 20, 20 | 128, 0]


def test_serial_box_takes_one_byte_per_word():
    with pytest.raises(ValidationError, match="at most 8 lines"):
        EventOutputConfig(kind="serial", serial_url="loop://", n_lines=9)
    with pytest.raises(ValueError, match="TTL box takes one byte"):
        SerialEventOutput("loop://", n_lines=12)
    out = SerialEventOutput("loop://", pulse_ms=1.0)
    with pytest.raises(ValueError, match="event code 256 does not fit.*1..255"):
        out.write(256, 0.0, 1, -1, "")
    out.close()
    with pytest.raises(RuntimeError, match="serial port /nonexistent/tty: could not be opened"):
        SerialEventOutput("/nonexistent/tty")


# -- config -------------------------------------------------------------------------------------------------
def test_config_defaults_bounds_and_rules():
    cfg = EventOutputConfig()
    assert cfg.kind == "zmq" and cfg.scheme == "return_to_zero" and cfg.max_code == 255
    assert cfg.min_code_spacing_ms == 10.0
    assert EventOutputConfig(kind="parallel", scheme="strobe", strobe_line=7).max_code == 127
    assert EventOutputConfig(kind="lsl").max_code == 2**31 - 1
    bad = [
        ({"scheme": "strobe"}, "needs strobe_line"),
        ({"strobe_line": 3}, "only used with scheme 'strobe'"),
        ({"scheme": "strobe", "strobe_line": 8, "n_lines": 8}, "not one of the 8 lines"),
        ({"kind": "serial"}, "needs serial_url"),
        ({"kind": "parallel", "n_lines": 9}, "at most 8 lines"),
        ({"n_lines": 17}, "less than or equal to 16"),
        ({"pulse_ms": 0.1}, "greater than or equal to 0.5"),
        ({"pulse_ms_typo": 5}, "Extra inputs are not permitted"),
        ({"kind": "usb"}, "kind"),
    ]
    for kwargs, msg in bad:
        with pytest.raises(ValidationError, match=msg):
            EventOutputConfig(**kwargs)
    with pytest.raises(ValidationError):
        cfg.pulse_ms = 3.0  # frozen


def test_zmq_kind_is_not_built_here():
    with pytest.raises(ValueError, match="controller builds it"):
        make_event_output(EventOutputConfig())


def test_outputs_are_event_output_parts():
    from contract.parts import EventOutput, check_part

    out = SerialEventOutput("loop://", pulse_ms=1.0)
    assert check_part(out, EventOutput, "event output") is out
    out.show("h", None)  # hardware does not see the screen
    out.close()


# -- LSL markers -------------------------------------------------------------------------------------------
def test_lsl_markers_read_back_by_a_real_inlet_with_the_flip_time(lsl_on_this_machine):
    import pylsl

    name = f"cortexloop-test-codes-{uuid.uuid4().hex[:8]}"
    presenter_t0 = time.monotonic() - 1000.0  # the presenter's clock has its own zero

    def presenter_now() -> float:
        return time.monotonic() - presenter_t0

    cfg = EventOutputConfig(kind="lsl", lsl_stream_name=name)
    out = make_event_output(cfg, codes=[10, 20, 30], presenter_now=presenter_now)
    assert isinstance(out, LslEventOutput)
    found = pylsl.resolve_byprop("name", name, 1, 5.0)
    assert len(found) == 1
    info = found[0]
    assert (info.channel_count(), info.channel_format(), info.type()) == (1, pylsl.cf_int32, "Markers")
    assert info.nominal_srate() == pylsl.IRREGULAR_RATE
    inlet = pylsl.StreamInlet(info)
    inlet.open_stream(5.0)
    time.sleep(0.2)  # the inlet's connection is live before the first sample
    sent = []  # (LSL time just before the flip time was read, just after the write), less the 50 ms
    for code in (10, 20, 20, 30):
        before = pylsl.local_clock()
        flip = presenter_now() - 0.050  # written 50 ms after its flip: the stamp must say the flip
        out.write(code, flip, 1, 0, "")
        sent.append((before - 0.050, pylsl.local_clock() - 0.050))
    samples, stamps = [], []
    end = time.monotonic() + 5.0
    while len(samples) < 4 and time.monotonic() < end:
        s, t = inlet.pull_chunk(timeout=0.2)
        samples += s
        stamps += t
    out.close()
    inlet.close_stream()
    assert [s[0] for s in samples] == [10, 20, 20, 30]
    # Each stamp lies between the LSL times read around its flip time and its write, less the 50 ms (within 2 ms:
    # the presenter's clock and LSL's are read one after the other inside write()); a stamp of the write's own
    # time would be 50 ms late.
    for got, (lo, hi) in zip(stamps, sent):
        assert lo - 0.002 <= got <= hi + 0.002, (got, lo, hi)


# -- what the recording system reads back ---------------------------------------------------------------------
@pytest.mark.parametrize("scheme,strobe_line", [("return_to_zero", None), ("strobe", 7), ("strobe", 0)])
def test_the_recording_systems_decoder_reads_back_every_word(scheme, strobe_line):
    """The lines this output drives, read by the decoder the acquisition side uses (acquisition/ttl.py), one
    port write per sample (so a strobe rises a sample after its data lines: the harder case)."""
    from acquisition.ttl import Lines, Transition, decode_transitions

    port = RecordingPort()
    out = ParallelEventOutput("fake", pulse_ms=0.5, n_lines=8, scheme=scheme, strobe_line=strobe_line, port=port)
    rng = np.random.default_rng(3)
    codes = [int(c) for c in rng.choice([10, 20, 30, 31], size=30, p=[0.1, 0.6, 0.15, 0.15])]
    codes[5:9] = [20, 20, 20, 20]  # repeats, in a burst closer than the spacing
    for k, c in enumerate(codes):
        out.write(c, 0.0, k, 0, "")
        if k % 3 == 0:
            time.sleep(0.002)
    wait_idle(out)
    out.close()
    transitions, state = [], 0
    for sample, (_, value) in enumerate(port.writes):
        for line in range(8):
            if (value ^ state) >> line & 1:
                transitions.append(Transition(sample, line, bool(value >> line & 1)))
        state = value
    decoded, unknown = decode_transitions(Lines(8, scheme, strobe_line), transitions)
    assert [d.value for d in decoded if d.kind == "word"] == codes
    assert unknown == 0
