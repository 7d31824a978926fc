"""Event codes out of the stimulus machine: TTL lines (parallel port, serial TTL box), LSL markers, and the
simulated rig's in-process output to the virtual cortex. Each is an `EventOutput` (contract/parts.py) with
stats() ({"words", "delayed_words", "queued", "max_delay_ms"}) for the session summary.

On TTL lines (the code-word scheme: docs/live-rig.md) write() runs inside PsychoPy's flip callback and never
waits: a free word is raised at once, and one background thread per output returns the lines to zero and
raises queued words. A word asked for less than 2 x pulse_ms after the one before is queued and raised as soon
as the spacing allows: delayed (counted in stats()), never merged, never dropped. Code bit k goes on the k-th
line that is not the strobe (line 0 is the parallel port's pin 2, D0; on a serial box, bit 0 of the byte).

An LSL marker is one int32 sample per code, stamped with the flip time on LSL's clock.

This module knows nothing of controller/: the presenter's code words are passed in (`codes`), so a word that
does not fit the lines is refused when the output is made, not at the first flip.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, Literal

import numpy as np
from pydantic import Field, model_validator

from contract import messages as m
from contract.schema import Strict

# A serial TTL box and a parallel port's data register both take one byte: eight lines.
BYTE_LINES = 8
LSL_MAX_CODE = 2**31 - 1  # one int32 channel
WRITE_TIMEOUT_S = 0.005  # the longest a serial write may wait for the device


class EventOutputConfig(Strict):
    """How event codes leave the stimulus machine: to the virtual cortex ("zmq"), on TTL lines (a parallel port or a
    serial TTL box) or as LSL markers. TTL keys must match [cortex.ttl]: both ends of one cable."""

    kind: Literal["zmq", "parallel", "serial", "lsl"] = Field(
        "zmq",
        description='"zmq": the simulated rig (codes to the virtual cortex process); "parallel": psychopy.parallel; '
        '"serial": a TTL box on a serial port (one byte per word); "lsl": an LSL marker outlet.',
    )
    parallel_address: str = Field(
        "/dev/parport0",
        min_length=1,
        max_length=200,
        description='kind "parallel": a Linux device node ("/dev/parport0") or, for Windows drivers, the I/O address '
        'as hex ("0x378").',
    )
    serial_url: str = Field(
        "",
        max_length=500,
        description='kind "serial" (required there): anything pyserial opens, e.g. "/dev/ttyUSB0", "COM3", "loop://".',
    )
    baud: int = Field(115200, ge=300, le=4_000_000, description='kind "serial": the baud rate.')
    lsl_stream_name: str = Field(
        "cortexloop-codes", min_length=1, max_length=200, description='kind "lsl": the marker outlet\'s stream name.'
    )
    pulse_ms: float = Field(
        5.0,
        ge=0.5,
        le=100.0,
        description="How long a word stays on the lines, and the zero word after it, in ms: codes are at least "
        "2 x pulse_ms apart. The recording system must sample each at least twice.",
    )
    n_lines: int = Field(
        8,
        ge=1,
        le=16,
        description="TTL lines wired to the recording system's digital inputs, strobe included (at most 8 on a "
        "parallel or serial output: one byte).",
    )
    scheme: Literal["return_to_zero", "strobe"] = Field(
        "return_to_zero",
        description='"return_to_zero": each word, then all lines to zero after pulse_ms; "strobe": the data lines, '
        "and the strobe line rising with them.",
    )
    strobe_line: int | None = Field(
        None,
        ge=0,
        le=15,
        description='scheme "strobe" only: the line the recording system latches the data lines on, one of n_lines.',
    )

    @model_validator(mode="after")
    def _lines_fit(self) -> "EventOutputConfig":
        if self.kind in ("parallel", "serial") and self.n_lines > BYTE_LINES:
            raise ValueError(
                f"n_lines = {self.n_lines}: a {self.kind} output drives one byte, at most {BYTE_LINES} lines"
            )
        if self.scheme == "strobe":
            if self.strobe_line is None:
                raise ValueError("scheme 'strobe' needs strobe_line (the line the recording system latches on)")
            if self.strobe_line >= self.n_lines:
                raise ValueError(
                    f"strobe_line = {self.strobe_line} is not one of the {self.n_lines} lines (0..{self.n_lines - 1})"
                )
            if self.n_lines < 2:
                raise ValueError("scheme 'strobe' needs at least 2 lines: one strobe, one for data")
        elif self.strobe_line is not None:
            raise ValueError("strobe_line is only used with scheme 'strobe' (return_to_zero has no strobe)")
        if self.kind == "serial" and not self.serial_url:
            raise ValueError("kind 'serial' needs serial_url (e.g. '/dev/ttyUSB0' or 'COM3')")
        return self

    @property
    def max_code(self) -> int:
        """The largest code word the lines carry (LSL: the int32 range)."""
        if self.kind == "lsl":
            return LSL_MAX_CODE
        return data_lines_max_code(self.n_lines, self.scheme)

    @property
    def min_code_spacing_ms(self) -> float:
        return 2 * self.pulse_ms


def data_lines_max_code(n_lines: int, scheme: str) -> int:
    """The largest code n_lines TTL lines carry under `scheme` (the strobe carries no data)."""
    return 2 ** (n_lines - (1 if scheme == "strobe" else 0)) - 1


class TtlWords:
    """Words on n_lines TTL lines through set_lines(int): raised at write(), back to zero after pulse_s, the zero
    held pulse_s before the next word; words that come too soon are queued (see the module docstring).

    write() also performs an overdue return to zero (the thread may be kept from running by the interpreter
    lock), so a late thread can lengthen a pulse but never merge two words."""

    def __init__(
        self,
        set_lines: Callable[[int], Any],
        pulse_s: float,
        n_lines: int,
        scheme: str,
        strobe_line: int | None,
        name: str,
    ):
        if scheme not in ("return_to_zero", "strobe"):
            raise ValueError(f"{name}: scheme {scheme!r} is neither 'return_to_zero' nor 'strobe'")
        if scheme == "strobe" and (strobe_line is None or not 0 <= strobe_line < n_lines):
            raise ValueError(f"{name}: scheme 'strobe' needs a strobe_line among lines 0..{n_lines - 1}")
        self.name = name
        self._set = set_lines
        self.pulse_s = float(pulse_s)
        self.scheme = scheme
        self.strobe_bit = 0 if scheme != "strobe" else 1 << strobe_line
        self.data_lines = [k for k in range(n_lines) if scheme != "strobe" or k != strobe_line]
        self.max_code = 2 ** len(self.data_lines) - 1
        self.min_code = 1 if scheme == "return_to_zero" else 0  # zero is the idle word, invisible without strobe
        self._cond = threading.Condition()
        self._queue: deque[tuple[int, float]] = deque()  # (code, when write() was called), monotonic
        self._clear_at: float | None = None  # when the word now on the lines goes back to zero
        self._free_at = -float("inf")  # when the next word may be raised (the zero held long enough)
        self._closed = False
        self.error: BaseException | None = None
        self.words = 0
        self.delayed_words = 0
        self.max_delay_s = 0.0
        self._set(0)  # start from all-zero, whatever the port held before
        self._thread = threading.Thread(target=self._run, name=f"cortexloop-{name}-lines", daemon=True)
        self._thread.start()

    def check(self, code: int) -> None:
        if not self.min_code <= code <= self.max_code:
            why = " (0 is the idle word: with return_to_zero it changes no line)" if code == 0 else ""
            raise ValueError(
                f"{self.name}: event code {code} does not fit: {len(self.data_lines)} data lines "
                f"({self.scheme}) carry codes {self.min_code}..{self.max_code}{why}"
            )

    def write(self, code: int) -> None:
        code = int(code)
        self.check(code)
        now = time.monotonic()
        with self._cond:
            if self.error is not None:
                raise RuntimeError(f"{self.name}: the lines could not be set: {self.error!r}") from self.error
            if self._closed:
                raise RuntimeError(f"{self.name}: write after close")
            try:
                self._service(now)
                if not self._queue and self._clear_at is None and now >= self._free_at:
                    self._raise(code, now, now)
                else:
                    self._queue.append((code, now))
            except Exception as e:  # the port failed in this thread: say which port, and stop using it
                self.error = e
                raise RuntimeError(f"{self.name}: the lines could not be set: {e!r}") from e
            finally:
                self._cond.notify()

    def stats(self) -> dict:
        with self._cond:
            return {
                "words": self.words,
                "delayed_words": self.delayed_words,
                "max_delay_ms": round(self.max_delay_s * 1000, 3),
                "queued": len(self._queue),
            }

    def close(self, timeout_s: float | None = None) -> None:
        """Let the queued words go out (at most timeout_s; by default their spacing plus a second), then zero."""
        with self._cond:
            self._closed = True
            wait = (len(self._queue) + 1) * 2 * self.pulse_s + 1.0
            self._cond.notify()
        self._thread.join(wait if timeout_s is None else timeout_s)
        with self._cond:
            self._queue.clear()
            if self.error is None:
                self._set(0)
            self._clear_at = None

    # -- under the lock ------------------------------------------------------------------------
    def _word(self, code: int) -> int:
        word = 0
        for bit, line in enumerate(self.data_lines):
            if code >> bit & 1:
                word |= 1 << line
        return word

    def _raise(self, code: int, asked: float, now: float) -> None:
        word = self._word(code)
        self._set(word)
        if self.strobe_bit:
            self._set(word | self.strobe_bit)  # data first: they are steady when the strobe rises
        # Counted from after the lines were set: `now` may have been read before the lock was taken, and a
        # pulse counted from it would be short by that wait.
        self._clear_at = time.monotonic() + self.pulse_s
        self.words += 1
        if now > asked:
            self.delayed_words += 1
            self.max_delay_s = max(self.max_delay_s, now - asked)

    def _service(self, now: float) -> None:
        """Do what is due: the return to zero, then the next queued word once the zero has been held."""
        if self._clear_at is not None and now >= self._clear_at:
            self._set(0)
            self._clear_at = None
            self._free_at = time.monotonic() + self.pulse_s  # from the real return to zero: a late one keeps the gap
        if self._clear_at is None and self._queue and now >= self._free_at:
            code, asked = self._queue.popleft()
            self._raise(code, asked, now)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                try:
                    self._service(now)
                except Exception as e:  # a port that fails: write() reports it at the next code
                    self.error = e
                    return
                if self._closed and not self._queue and self._clear_at is None:
                    return
                due = self._clear_at if self._clear_at is not None else (self._free_at if self._queue else None)
                self._cond.wait(None if due is None else max(due - time.monotonic(), 0.0))


class _TtlEventOutput:
    """What the parallel and serial outputs share: a TtlWords on the port's set-lines call."""

    lines: TtlWords

    def write(self, code: int, time_s: float, trial_id: int, index: int, image_hash: str) -> None:
        self.lines.write(code)  # the edge is now: time_s (the flip) is the recording system's to stamp

    def show(self, image_hash: str, pixels: Any) -> None:
        pass  # a recording system on TTL lines does not see the screen

    def stats(self) -> dict:
        return self.lines.stats()

    def check_codes(self, codes: Iterable[int]) -> None:
        for c in codes:
            self.lines.check(int(c))

    def close(self) -> None:
        self.lines.close()
        self._close_port()

    def _close_port(self) -> None:
        pass


class ParallelEventOutput(_TtlEventOutput):
    """Codes on a parallel port's data lines (pins 2-9 = D0-D7) through psychopy.parallel, or any object with
    setData(int) passed as `port`."""

    def __init__(
        self,
        address: str = "/dev/parport0",
        pulse_ms: float = 5.0,
        n_lines: int = BYTE_LINES,
        scheme: str = "return_to_zero",
        strobe_line: int | None = None,
        port: Any = None,
    ):
        if not 1 <= n_lines <= BYTE_LINES:
            raise ValueError(f"parallel port {address}: n_lines = {n_lines}; its data register has 1..8 lines")
        if port is None:
            port = _open_parallel(address)
        if not callable(getattr(port, "setData", None)):
            raise TypeError(f"parallel port {address}: {type(port).__name__} has no setData(int)")
        self.port = port
        self.lines = TtlWords(port.setData, pulse_ms / 1000, n_lines, scheme, strobe_line, f"parallel port {address}")


def _open_parallel(address: str):
    try:
        from psychopy import parallel
    except ImportError as e:
        raise RuntimeError(f"parallel port {address}: psychopy.parallel cannot be imported ({e})") from e
    if parallel.ParallelPort is None:
        raise RuntimeError(f"parallel port {address}: psychopy found no parallel port driver on this machine")
    addr: Any = address
    if address.lower().startswith("0x"):
        addr = int(address, 16)  # Windows drivers take the I/O address
    try:
        return parallel.ParallelPort(address=addr)
    except Exception as e:  # pyparallel missing, no permission on /dev/parport0, no such port
        raise RuntimeError(
            f"parallel port {address}: could not be opened ({type(e).__name__}: {e}); on Linux it "
            f"needs pyparallel, the ppdev module and write access to the device"
        ) from e


class SerialEventOutput(_TtlEventOutput):
    """Codes to a serial TTL box: one byte per word (the box sets its lines to the byte), then the zero byte."""

    def __init__(
        self,
        url: str,
        baud: int = 115200,
        pulse_ms: float = 5.0,
        n_lines: int = BYTE_LINES,
        scheme: str = "return_to_zero",
        strobe_line: int | None = None,
        port: Any = None,
    ):
        if not 1 <= n_lines <= BYTE_LINES:
            raise ValueError(f"serial port {url}: n_lines = {n_lines}; a TTL box takes one byte, 1..8 lines")
        if port is None:
            try:
                import serial
            except ImportError as e:
                raise RuntimeError(f"serial port {url}: pyserial is not installed ({e})") from e
            try:
                # A byte goes to the OS buffer at once; a stuck device (flow control) raises after
                # WRITE_TIMEOUT_S instead of holding the flip callback, and the next write() reports it.
                port = serial.serial_for_url(url, baudrate=baud, write_timeout=WRITE_TIMEOUT_S)
            except (serial.SerialException, ValueError) as e:
                raise RuntimeError(f"serial port {url}: could not be opened ({e})") from e
        self.port = port
        self.lines = TtlWords(self._send, pulse_ms / 1000, n_lines, scheme, strobe_line, f"serial port {url}")

    def _send(self, word: int) -> None:
        if not 0 <= word <= 255:  # cannot happen with n_lines <= 8; a byte is what the box understands
            raise ValueError(f"word {word} is not one byte")
        self.port.write(bytes((word,)))

    def _close_port(self) -> None:
        try:
            self.port.flush()
        finally:
            self.port.close()


class LslEventOutput:
    """Codes as samples of an LSL marker stream: one int32 channel, irregular rate, type "Markers".

    Each sample is stamped on LSL's clock with the time of the flip: `presenter_now` is the presenter's clock
    (the one time_s is read from); the flip's age on it is subtracted from pylsl.local_clock(). Without it a
    sample is stamped when write() is called: the flip, inside the flip callback, but late for a code written
    after the fact (the trial end)."""

    def __init__(self, stream_name: str = "cortexloop-codes", presenter_now: Callable[[], float] | None = None):
        pylsl = import_pylsl()
        self.pylsl = pylsl
        self.stream_name = stream_name
        self.presenter_now = presenter_now
        info = pylsl.StreamInfo(stream_name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_int32, stream_name)
        self.outlet = pylsl.StreamOutlet(info)
        self.words = 0

    def write(self, code: int, time_s: float, trial_id: int, index: int, image_hash: str) -> None:
        code = int(code)
        if not 0 <= code <= LSL_MAX_CODE:
            raise ValueError(f"LSL stream {self.stream_name}: event code {code} is not an int32 in 0..{LSL_MAX_CODE}")
        stamp = self.pylsl.local_clock()
        if self.presenter_now is not None:
            stamp -= self.presenter_now() - time_s
        self.outlet.push_sample([code], stamp)
        self.words += 1

    def show(self, image_hash: str, pixels: Any) -> None:
        pass

    def stats(self) -> dict:
        return {"words": self.words, "delayed_words": 0, "max_delay_ms": 0.0, "queued": 0}

    def close(self) -> None:
        self.outlet = None  # liblsl closes the outlet when the last reference goes


def import_pylsl():
    """pylsl, or a RuntimeError saying how to install it (also when liblsl is missing)."""
    try:
        import pylsl
    except (ImportError, RuntimeError, OSError) as e:  # pylsl raises RuntimeError when liblsl is missing
        raise RuntimeError(f"LSL needs pylsl with its liblsl (pip install pylsl): {e}") from e
    return pylsl


class CortexEventOutput:
    """EventOutput of the simulated rig in one process: codes and screen contents straight to the cortex."""

    def __init__(self, cortex):
        self.cortex = cortex
        self.seq = 0

    def write(self, code: int, time_s: float, trial_id: int, index: int, image_hash: str) -> None:
        self.seq += 1
        self.cortex.on_event(
            m.EventCode(
                stream="presenter",
                seq=self.seq,
                code=code,
                time_s=time_s,
                clock="presenter",
                trial_id=trial_id,
                index=index,
                image_hash=image_hash,
            )
        )

    def show(self, image_hash: str, pixels: np.ndarray) -> None:
        self.cortex.show(image_hash, pixels)

    def close(self) -> None:
        pass


def make_event_output(
    cfg: EventOutputConfig, codes: Iterable[int] = (), presenter_now: Callable[[], float] | None = None
):
    """The hardware event output cfg names; each of `codes` (the words the presenter sends) is checked to fit.

    presenter_now: the presenter's clock, used by the LSL output to stamp the flip (see LslEventOutput)."""
    if cfg.kind == "zmq":
        raise ValueError(
            "event output kind 'zmq' is the simulated rig's output to the virtual cortex "
            "(ZmqEventOutput); the controller builds it, make_event_output builds hardware outputs"
        )
    if cfg.kind == "parallel":
        out: Any = ParallelEventOutput(cfg.parallel_address, cfg.pulse_ms, cfg.n_lines, cfg.scheme, cfg.strobe_line)
    elif cfg.kind == "serial":
        out = SerialEventOutput(cfg.serial_url, cfg.baud, cfg.pulse_ms, cfg.n_lines, cfg.scheme, cfg.strobe_line)
    elif cfg.kind == "lsl":
        out = LslEventOutput(cfg.lsl_stream_name, presenter_now)
    else:  # the Literal makes this unreachable from a validated config
        raise ValueError(f"event output kind {cfg.kind!r} is unknown")
    codes = list(codes)
    try:
        for c in codes:
            if cfg.kind == "lsl":
                if not 0 <= int(c) <= LSL_MAX_CODE:
                    raise ValueError(f"LSL stream {cfg.lsl_stream_name}: event code {c} is not an int32")
            else:
                out.check_codes([c])
    except ValueError:
        out.close()
        raise
    return out
