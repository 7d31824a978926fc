"""Spikes and event codes from Lab Streaming Layer (LSL): LslAcquisitionSource, and outlets that publish such
streams (LslSpikeOutlet, LslCodeOutlet) for a simulated recording system or a test. The stream formats and
the rig set-up: docs/live-rig.md.

Streams are found by name, with short timeouts:

- spike stream: one numeric channel (the unit; a float must hold whole numbers), one sample per spike, its
  LSL timestamp the spike time. Unit u is neuron u; units >= n_neurons are counted (`unknown_units`) and
  skipped.
- code stream: one channel, the code word (an integer, or a string holding one), stamped when the code was
  seen (the flip, or the TTL edge).

Any other shape is refused with LslStreamError, which describe() raises as SessionAbort; so is a name that
more than one outlet carries (each name is resolved for RESOLVE_ALL_S after its first answer, so that every
outlet of that name is heard, and each is named by host and source_id).

Reconnects: liblsl's silent recovery is off. An inlet whose outlet goes away (closed, killed, the connection
broken) is closed, and its stream is looked for again by name, with the same duplicate rule; the new inlet is
counted (`reconnects`; `outlet_changes` when it is a different outlet than before). Spikes pushed while no inlet
was open are never delivered, so the first batch after a spike stream's reconnect skips one sequence number and
starts at its first spike: the engine counts the skipped batch lost over (end of the last batch, that spike)
and keeps the response windows it touches invalid. No heartbeat is made while the spike stream is lost.

Batches are labelled with the spike stream's name, or "NAME-EPOCH" for a resumed session's recording (epoch >= 1),
so that a resumed recording is a stream of its own and never reuses the batch numbers the store holds.

Clock: the spike stream's own. Code times are moved onto it with each inlet's LSL time correction, unless both
streams come from one host. Heartbeats (LSL has none) give, every heartbeat_ms, a lower bound of the spike
stream's clock (a spike stamped t that arrived at monotonic time a says it is now at least t + (now - a)),
less margin_ms, which must cover the longest spike latency so that no spike in flight falls in a completed
window. The bound is an estimate, never proof that the stream was live: the engine collects a window only once
a spike stamped after it has come (controller/protocol.py, STREAM_PROOF). No spike for stale_after_s: heartbeats stop, and the engine ends the session ("acquisition silent").

use_lsl_config writes an lsl_api.cfg that sets liblsl's discovery scope; without it liblsl's own search applies.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Iterable

import numpy as np

from contract import messages as m
from contract.parts import SessionAbort
from stimulus.event_outputs import import_pylsl

ROLE = "acquisition"
CHUNK = 65_536  # samples taken from an inlet in one pull; a poll takes several when more are waiting
MAX_PULLS = 64  # per inlet per poll: a flood is taken over several polls, never all at once
CORRECTION_EVERY_S = 1.0  # liblsl updates its estimate in the background; reading it more often gains nothing
# After the first answers, how long other outlets of the same names are listened for (liblsl asks every 0.5 s).
RESOLVE_ALL_S = 2.0
CLOCK_BOUND_WINDOW_S = 10.0  # spikes this recent bound the stream's clock (older ones would let drift in)
# pylsl's channel formats that carry numbers, and the numpy type a pull fills (cf_string = 3 is refused).
LSL_DTYPES = {1: np.float32, 2: np.float64, 4: np.int32, 5: np.int16, 6: np.int8, 7: np.int64}
MAX_NEURONS = 65_536  # SpikeBatch.neuron is uint16
# LSL drops the oldest samples, silently, when a buffer is full; for an irregular-rate stream a buffer is given in
# hundreds of samples. A million spikes: 100 s of a 384-channel probe at 10,000 spikes/s, 8 MB of pointers.
BUFFER_SAMPLES = 1_000_000


class LslStreamError(RuntimeError):
    """An LSL stream that cannot be used: not found, or not the shape this source reads.

    describe() raises it as the contract's SessionAbort (the session ends with the reason in its summary)."""


def use_lsl_config(directory: str | os.PathLike, resolve_scope: str = "machine") -> Path:
    """Write lsl_api.cfg into directory (IPv6 off, discovery limited to resolve_scope) and set LSLAPICFG to it.

    Call it before the process makes or resolves its first LSL stream: liblsl reads the file once."""
    path = write_lsl_config(directory, resolve_scope)
    os.environ["LSLAPICFG"] = str(path)
    return path


LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


def lsl_discovery(rig, directory: str | os.PathLike, env: dict) -> Path | None:
    """`cortexloop run`'s LSL discovery for the processes it starts (env: their environment, changed here).

    A rig that reads or writes LSL streams ([cortex] source = "lsl", [event_output] kind = "lsl") and whose
    endpoints are all on this machine (auto, off, ipc://, or tcp:// to a loopback address) gets lsl_api.cfg in
    `directory` (IPv6 off, ResolveScope = machine), named by env["LSLAPICFG"]. Returns its path; None where the
    rig uses no LSL, an endpoint is on another machine (liblsl's own search applies), or env names a config
    already (the lab's own, which wins)."""
    uses_lsl = rig.cortex.source == "lsl" or rig.event_output.kind == "lsl"
    if not uses_lsl or env.get("LSLAPICFG"):
        return None
    for value in rig.endpoints.model_dump().values():
        if not isinstance(value, str) or value in ("auto", "off") or value.startswith(("ipc://", "inproc://")):
            continue
        host = value.split("://", 1)[-1].rsplit(":", 1)[0]
        if not value.startswith("tcp://") or host not in LOCAL_HOSTS:
            return None
    path = write_lsl_config(directory, "machine")
    env["LSLAPICFG"] = str(path)
    return path


def write_lsl_config(directory: str | os.PathLike, resolve_scope: str = "machine") -> Path:
    """lsl_api.cfg in directory: IPv6 off, discovery limited to resolve_scope, liblsl's log to errors only."""
    if resolve_scope not in ("machine", "link", "site", "organization", "global"):
        raise ValueError(f"resolve_scope {resolve_scope!r}: liblsl knows machine, link, site, organization, global")
    path = Path(directory) / "lsl_api.cfg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "; written by cortexloop (acquisition/lsl_source.py: use_lsl_config)\n"
        "[ports]\nIPv6 = disable\n\n"
        f"[multicast]\nResolveScope = {resolve_scope}\n\n"
        "[log]\nlevel = -2\n"
    )  # errors only: liblsl's info lines would fill every process's stderr
    return path


class LslAcquisitionSource:
    """The AcquisitionSource of a recording system that publishes on LSL (the formats in the module docstring).

    A live source: its heartbeats move with the wall clock (time.monotonic()), so it belongs with WallClock,
    never with the virtual clock of `--speed max`. counters() gives what was read and skipped, for the summary."""

    def __init__(
        self,
        spike_stream: str,
        code_stream: str,
        n_neurons: int,
        margin_ms: float = 200.0,
        stale_after_s: float = 5.0,
        heartbeat_ms: float = 100.0,
        epoch: int = 0,
    ):
        if not spike_stream or not code_stream:
            raise ValueError("LSL source: spike_stream and code_stream must be named")
        if spike_stream == code_stream:
            raise ValueError(f"LSL source: spike and code streams are both named {spike_stream!r}")
        if not 1 <= n_neurons <= MAX_NEURONS:
            raise ValueError(f"LSL source: n_neurons = {n_neurons}, must be 1..{MAX_NEURONS}")
        if not (0 <= margin_ms <= 10_000 and 0 < stale_after_s <= 3600 and 0 < heartbeat_ms <= 10_000):
            raise ValueError("LSL source: margin_ms 0..10000, stale_after_s 0..3600 and heartbeat_ms 0..10000")
        if epoch < 0:
            raise ValueError(f"LSL source: epoch = {epoch}, must be >= 0 (how many times the session was resumed)")
        self.pylsl = import_pylsl()
        self.LostError, self.TimeoutError = _lsl_errors(self.pylsl)
        self.spike_stream = spike_stream
        self.code_stream = code_stream
        # The label of the batches and heartbeats (the store's stream name): a resumed recording is a stream of its own.
        self.stream = spike_stream if epoch == 0 else f"{spike_stream}-{epoch}"
        self.n_neurons = int(n_neurons)
        self.margin_s = margin_ms / 1000
        self.stale_after_s = float(stale_after_s)
        self.heartbeat_s = heartbeat_ms / 1000
        self.spike_inlet = None
        self.code_inlet = None
        self.info: dict = {}
        self.spike_correction_s = 0.0
        self.code_correction_s = 0.0
        self.same_host = False
        self.corrected_at = -float("inf")
        self.batch_seq = 0
        self.total_spikes = 0
        self.code_seq = 0
        self.hb_seq = 0
        self.last_end_s: float | None = None  # end of the last batch (spike clock)
        self.last_spike_s = -float("inf")
        # (monotonic arrival, latest spike time - arrival) per pull: each a lower bound of stream clock - monotonic.
        self.clock_bounds: deque[tuple[float, float]] = deque()
        self.last_arrival = -float("inf")  # monotonic: when a spike last came (or the streams were opened)
        self.last_heartbeat = -float("inf")
        self.last_heartbeat_clock = -float("inf")
        self.unknown_units = 0
        self.malformed_units = 0
        self.malformed_codes = 0
        self.spike_buf: np.ndarray | None = None
        self.reconnects = 0
        self.outlet_changes = 0
        self.uids: dict[str, str] = {}  # "spike"/"code": the uid of the outlet each inlet reads
        self.lost: dict[str, dict] = {}  # "spike"/"code": an inlet whose outlet went away, being looked for again
        self.gap_pending = False  # the next spike batch follows a reconnect

    # -- AcquisitionSource ------------------------------------------------------------------------
    def describe(self, timeout_s: float = 10.0) -> dict:
        """Resolve both streams by name, open them and take LSL's first clock correction of each."""
        if self.info:
            return self.info
        try:
            return self._open(timeout_s)
        except LslStreamError as e:
            self.close()
            raise SessionAbort(str(e)) from e

    def _open(self, timeout_s: float) -> dict:
        end = time.monotonic() + timeout_s
        spike_info = self._resolve(self.spike_stream, end)
        self._check_shape(spike_info, "spike", numeric_only=True)
        code_info = self._resolve(self.code_stream, end)
        self._check_shape(code_info, "code", numeric_only=False)
        self._refuse_duplicates()
        pl = self.pylsl
        # recover=False: liblsl would reconnect silently, to a new outlet of the same name and source_id too, and
        # its spikes would continue the numbering over a gap nobody saw; this source reconnects itself (_reconnect).
        self.spike_inlet = pl.StreamInlet(spike_info, max_buflen=BUFFER_SAMPLES // 100, recover=False)
        self.code_inlet = pl.StreamInlet(code_info, max_buflen=BUFFER_SAMPLES // 100, recover=False)
        self.uids = {"spike": spike_info.uid(), "code": code_info.uid()}
        # Two streams of one machine are stamped by one clock: the code stamps need no moving, and LSL's
        # estimated corrections, noise there, would only shift them.
        self.same_host = bool(spike_info.hostname()) and spike_info.hostname() == code_info.hostname()
        if not self.same_host:
            corrections = self._first_corrections(max(end - time.monotonic(), 0.5))
            self.spike_correction_s, self.code_correction_s = corrections
        self.corrected_at = time.monotonic()
        for inlet, name in ((self.spike_inlet, self.spike_stream), (self.code_inlet, self.code_stream)):
            try:
                inlet.open_stream(max(end - time.monotonic(), 0.5))
            except self.TimeoutError as e:
                raise LslStreamError(f"LSL stream {name!r} was found but did not open within {timeout_s:g} s") from e
        self.spike_buf = np.empty((CHUNK, 1), dtype=LSL_DTYPES[spike_info.channel_format()])
        self.last_arrival = time.monotonic()  # the stale clock starts when the streams are open
        self.info = {
            "n_neurons": self.n_neurons,
            "kind": "lsl",
            "streams": [self.spike_stream, self.code_stream],
            "spike_stream": _stream_facts(spike_info),
            "code_stream": _stream_facts(code_info),
            "clock": f"{self.spike_stream} (LSL)",
            "margin_ms": self.margin_s * 1000,
            "same_host": self.same_host,
            "stale_after_s": self.stale_after_s,
            "stream_label": self.stream,
            "lsl_api_cfg": os.environ.get("LSLAPICFG", ""),
        }
        return self.info

    def poll(self, timeout_s: float = 0.0) -> list:
        if self.spike_inlet is None and not self.lost:
            return []
        now = time.monotonic()
        if now - self.corrected_at >= CORRECTION_EVERY_S:
            self._refresh_corrections(now)
        if self.lost:
            self._reconnect(now)
        out: list = []
        batch = self._pull_spikes(timeout_s) if self.spike_inlet is not None else None
        if batch is not None:
            out.append(batch)
        if self.code_inlet is not None:
            out.extend(self._pull_codes())
        # From a spike stream's loss to the first batch after its reconnect (which marks the gap) nothing says its
        # clock moved with no spike missed: no heartbeat.
        hb = self._heartbeat(time.monotonic()) if "spike" not in self.lost and not self.gap_pending else None
        if hb is not None:
            out.append(hb)
        return out

    def waitables(self) -> list:
        return []  # liblsl has no socket to hand to a poller: the engine polls this source every pump

    def malformed(self) -> int:
        return self.malformed_units + self.malformed_codes

    def close(self) -> None:
        for inlet in (self.spike_inlet, self.code_inlet):
            if inlet is not None:
                inlet.close_stream()
        self.spike_inlet = self.code_inlet = None
        self.lost.clear()

    # -- what it does -----------------------------------------------------------------------------
    def counters(self) -> dict:
        """For the session summary: what was skipped and why."""
        return {
            "spikes": self.total_spikes,
            "batches": self.batch_seq,
            "codes": self.code_seq,
            "unknown_units": self.unknown_units,
            "malformed_units": self.malformed_units,
            "malformed_codes": self.malformed_codes,
            "reconnects": self.reconnects,
            "outlet_changes": self.outlet_changes,
        }

    def _resolve(self, name: str, end: float):
        """An outlet named `name`: the first to answer before `end` (monotonic); _refuse_duplicates checks that it
        is the only one."""
        left = end - time.monotonic()
        found = self.pylsl.resolve_byprop("name", name, 1, max(left, 0.2))
        if not found:
            cfg = os.environ.get("LSLAPICFG")
            raise LslStreamError(
                f"LSL stream {name!r} not found (resolved by name within the describe timeout; is the recording "
                f"system streaming, and is discovery wide enough? "
                + (
                    f"LSLAPICFG={cfg}: its ResolveScope limits the search; `cortexloop run` writes one with "
                    f"ResolveScope = machine when every endpoint is on this machine, and a LSLAPICFG set before "
                    f"it wins)"
                    if cfg
                    else "liblsl's own configuration applies)"
                )
            )
        _one_outlet(name, found)
        return found[0]

    def _refuse_duplicates(self) -> None:
        """Listens RESOLVE_ALL_S for every outlet of the two names (both at once): a second outlet of a name is
        refused rather than one of them read at random (an outlet left from an earlier run, another rig's)."""
        names = (self.spike_stream, self.code_stream)
        if any("'" in n for n in names):  # not expressible in liblsl's predicate: one name after the other
            found = [f for n in names for f in self.pylsl.resolve_byprop("name", n, 2, RESOLVE_ALL_S)]
        else:  # returns early once a third outlet answers: one name has two
            found = self.pylsl.resolve_bypred(" or ".join(f"name='{n}'" for n in names), 3, RESOLVE_ALL_S)
        for n in names:
            _one_outlet(n, [f for f in found if f.name() == n])

    def _lose(self, which: str) -> None:
        """The inlet `which` ("spike"/"code") lost its outlet: it is closed and its stream looked for again."""
        if which in self.lost:
            return
        inlet = self.spike_inlet if which == "spike" else self.code_inlet
        if which == "spike":
            self.spike_inlet = None
        else:
            self.code_inlet = None
        if inlet is not None:
            try:
                inlet.close_stream()
            except Exception:  # the connection is gone already
                pass
        name = self.spike_stream if which == "spike" else self.code_stream
        resolver = self.pylsl.ContinuousResolver(prop="name", value=name, forget_after=RESOLVE_ALL_S)
        self.lost[which] = {"name": name, "resolver": resolver, "first_seen": None}

    def _reconnect(self, now: float) -> None:
        """Opens a lost stream again once its name has answered for RESOLVE_ALL_S, from one outlet only."""
        for which, lost in list(self.lost.items()):
            found = lost["resolver"].results()
            if not found:
                lost["first_seen"] = None
                continue
            if lost["first_seen"] is None:
                lost["first_seen"] = now
            if now - lost["first_seen"] < RESOLVE_ALL_S:
                continue
            try:
                _one_outlet(lost["name"], found)
                self._check_shape(found[0], which, numeric_only=which == "spike")
            except LslStreamError as e:
                raise SessionAbort(f"{e} (while reconnecting)") from e
            info = found[0]
            inlet = self.pylsl.StreamInlet(info, max_buflen=BUFFER_SAMPLES // 100, recover=False)
            try:
                inlet.open_stream(1.0)
            except self.TimeoutError:
                continue  # tried again at the next poll
            del self.lost[which]
            self.reconnects += 1
            if info.uid() != self.uids.get(which):
                self.outlet_changes += 1
            self.uids[which] = info.uid()
            if which == "spike":
                self.spike_buf = np.empty((CHUNK, 1), dtype=LSL_DTYPES[info.channel_format()])
                self.spike_inlet = inlet
                self.gap_pending = True
                self.last_arrival = time.monotonic()  # the stale clock starts again from the reconnect
            else:
                self.code_inlet = inlet

    def _check_shape(self, info, what: str, numeric_only: bool) -> None:
        name, n = info.name(), info.channel_count()
        if n != 1:
            raise LslStreamError(
                f"LSL {what} stream {name!r} has {n} channels; this source reads exactly 1 "
                f"(the {'unit index' if what == 'spike' else 'code word'})"
            )
        if numeric_only and info.channel_format() not in LSL_DTYPES:
            raise LslStreamError(
                f"LSL spike stream {name!r} carries strings; unit indices must be numbers (int32 preferred)"
            )

    def _first_corrections(self, timeout_s: float) -> tuple[float, float]:
        """Both inlets' first correction, taken at the same time (liblsl's first estimate of a stream is slow)."""
        result: dict[str, float | BaseException] = {}

        def take(key: str, inlet) -> None:
            try:
                result[key] = inlet.time_correction(timeout_s)
            except Exception as e:  # TimeoutError, LostError: reported below with the stream's name
                result[key] = e

        threads = [
            threading.Thread(target=take, args=(k, i), daemon=True)
            for k, i in (("spike", self.spike_inlet), ("code", self.code_inlet))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout_s + 1.0)
        values = []
        for key, name in (("spike", self.spike_stream), ("code", self.code_stream)):
            v = result.get(key)
            if not isinstance(v, float):
                raise LslStreamError(f"LSL stream {name!r}: no clock correction within {timeout_s:.1f} s ({v!r})")
            values.append(v)
        return values[0], values[1]

    def _refresh_corrections(self, now: float) -> None:
        self.corrected_at = now
        if self.same_host:
            return
        try:  # instantaneous after the first: liblsl refreshes the estimate in the background
            self.spike_correction_s = self.spike_inlet.time_correction(0.0)
            self.code_correction_s = self.code_inlet.time_correction(0.0)
        except (self.TimeoutError, self.LostError):
            pass  # keep the last estimate; a stream that is gone stops delivering and goes stale

    def _pull(self, inlet, timeout_s: float, dest=None, max_samples: int = CHUNK):
        if inlet is None:
            return None, []
        try:
            return inlet.pull_chunk(timeout=timeout_s, max_samples=max_samples, dest_obj=dest)
        except self.LostError:
            self._lose("spike" if inlet is self.spike_inlet else "code")
            return None, []

    def _pull_spikes(self, timeout_s: float) -> m.SpikeBatch | None:
        units: list[np.ndarray] = []
        times: list[np.ndarray] = []
        waited = False
        for _ in range(MAX_PULLS):
            _, ts = self._pull(self.spike_inlet, 0.0, self.spike_buf)
            if not len(ts) and not units and timeout_s > 0 and not waited:
                waited = True  # nothing there: wait up to timeout_s for one spike, then take what followed it
                _, ts = self._pull(self.spike_inlet, timeout_s, self.spike_buf, 1)
                if len(ts):
                    units.append(self.spike_buf[:1, 0].copy())
                    times.append(np.asarray(ts, np.float64))
                    continue
            n = len(ts)
            if n == 0:
                break
            units.append(self.spike_buf[:n, 0].copy())
            times.append(np.asarray(ts, np.float64))
            if n < CHUNK:
                break
        if not units:
            return None
        arrival = time.monotonic()
        self.last_arrival = arrival
        u = np.concatenate(units)
        t = np.concatenate(times)
        self.last_spike_s = max(self.last_spike_s, float(t.max()))
        self.clock_bounds.append((arrival, float(t.max()) - arrival))
        while self.clock_bounds and arrival - self.clock_bounds[0][0] > CLOCK_BOUND_WINDOW_S:
            self.clock_bounds.popleft()
        whole = np.isfinite(u) & (u == np.floor(u)) & (u >= 0) if u.dtype.kind == "f" else u >= 0
        self.malformed_units += int((~whole).sum())
        known = whole & (u < self.n_neurons)
        self.unknown_units += int((whole & ~known).sum())
        u, t = u[known].astype(np.uint16), t[known]
        self.total_spikes += len(u)
        # A batch covers its spikes: from the end of the last batch (or its first spike) to just after its last.
        # After a reconnect it starts at its first spike, and one sequence number is skipped: the batch that was
        # never delivered covered (end of the last batch, this batch's start).
        start = float(t.min()) if len(t) else self.last_spike_s
        if self.last_end_s is not None and not self.gap_pending:
            start = min(start, self.last_end_s)
        end = max(float(np.nextafter(t.max(), np.inf)) if len(t) else start, start)
        self.last_end_s = max(end, self.last_end_s if self.last_end_s is not None else end)
        self.batch_seq += 2 if self.gap_pending and self.batch_seq else 1
        self.gap_pending = False
        return m.SpikeBatch(
            stream=self.stream,
            seq=self.batch_seq,
            t_start_s=start,
            t_end_s=end,
            total_spikes=self.total_spikes,
            neuron=u,
            time_s=t,
        )

    def _pull_codes(self) -> list[m.EventCode]:
        out: list[m.EventCode] = []
        shift = self.code_correction_s - self.spike_correction_s
        for _ in range(MAX_PULLS):
            samples, ts = self._pull(self.code_inlet, 0.0)
            for sample, stamp in zip(samples or [], ts):
                code = _code_word(sample[0])
                if code is None:
                    self.malformed_codes += 1
                    continue
                self.code_seq += 1
                out.append(
                    m.EventCode(
                        stream=self.code_stream,
                        seq=self.code_seq,
                        code=code,
                        time_s=float(stamp) + shift,
                        clock="acquisition",
                    )
                )
            if len(ts) < CHUNK:
                break
        return out

    def _heartbeat(self, now: float) -> m.Heartbeat | None:
        if now - self.last_arrival > self.stale_after_s or now - self.last_heartbeat < self.heartbeat_s:
            return None
        if not self.clock_bounds:
            return None  # no spike yet: nothing says where the stream's clock is
        self.last_heartbeat = now
        surely = now + max(b for _, b in self.clock_bounds)
        clock = max(surely - self.margin_s, self.last_heartbeat_clock)
        self.last_heartbeat_clock = clock
        self.hb_seq += 1
        # batch_seq: the last batch made, so the engine knows whether it has them all (they are in this poll).
        return m.Heartbeat(
            role=ROLE, seq=self.hb_seq, clock_s=clock, stream=self.stream, info={"batch_seq": self.batch_seq}
        )


def _code_word(value) -> int | None:
    """A code word from one marker sample (a number, or a string holding a whole number); None if it is not one."""
    if isinstance(value, (bytes, str)):
        try:
            value = int(value.strip())
        except ValueError:
            return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    if not np.isfinite(f) or f != int(f) or not 0 <= f <= m.MAX_EVENT_CODE:
        return None
    return int(f)


def _lsl_errors(pl) -> tuple[type, type]:
    """pylsl's (LostError, TimeoutError): at its top level before pylsl 1.17, in pylsl.util since."""
    where = pl if hasattr(pl, "LostError") else importlib.import_module("pylsl.util")
    return where.LostError, where.TimeoutError


def _one_outlet(name: str, found: list) -> None:
    """Refuses a name that more than one outlet carries, naming each by host, source_id and creation time."""
    if len(found) > 1:
        outlets = "; ".join(
            f"host {f.hostname()!r} source_id {f.source_id()!r} created at {f.created_at():.1f} s (uid {f.uid()})"
            for f in found
        )
        raise LslStreamError(
            f"LSL stream {name!r}: {len(found)} outlets carry this name ({outlets}); stop the stale one, or give "
            f"each recording a unique stream name"
        )


def _stream_facts(info) -> dict:
    return {
        "name": info.name(),
        "type": info.type(),
        "source_id": info.source_id(),
        "hostname": info.hostname(),
        "channel_format": int(info.channel_format()),
    }


class LslSpikeOutlet:
    """Publishes a spike stream in the format LslAcquisitionSource reads: one int32 channel (the unit), one
    sample per spike, stamped with the spike time (on this machine's pylsl.local_clock())."""

    def __init__(self, name: str, n_units: int | None = None):
        pl = import_pylsl()
        info = pl.StreamInfo(name, "Spikes", 1, pl.IRREGULAR_RATE, pl.cf_int32, name)
        desc = info.desc()
        desc.append_child_value("format", "channel 0: unit index; sample timestamp: spike time")
        if n_units is not None:
            desc.append_child_value("n_units", str(int(n_units)))
        self.outlet = pl.StreamOutlet(info, max_buffered=BUFFER_SAMPLES // 100)
        self.name = name

    def push(self, units: Iterable[int], times_s: Iterable[float]) -> None:
        u = np.ascontiguousarray(np.asarray(units, np.int32).reshape(-1, 1))
        t = [float(x) for x in times_s]
        if len(t) != len(u):
            raise ValueError(f"LSL spike stream {self.name!r}: {len(u)} units but {len(t)} times")
        if len(u):
            self.outlet.push_chunk(u, t)

    def wait_for_consumers(self, timeout_s: float) -> bool:
        return self.outlet.wait_for_consumers(timeout_s)

    def close(self) -> None:
        self.outlet = None


class LslCodeOutlet:
    """Publishes a code stream: one int32 channel, irregular rate, type "Markers" (as LslEventOutput does)."""

    def __init__(self, name: str):
        pl = import_pylsl()
        info = pl.StreamInfo(name, "Markers", 1, pl.IRREGULAR_RATE, pl.cf_int32, name)
        self.outlet = pl.StreamOutlet(info)
        self.name = name

    def push(self, code: int, time_s: float) -> None:
        self.outlet.push_sample([int(code)], float(time_s))

    def wait_for_consumers(self, timeout_s: float) -> bool:
        return self.outlet.wait_for_consumers(timeout_s)

    def close(self) -> None:
        self.outlet = None
