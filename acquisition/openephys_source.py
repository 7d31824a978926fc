"""Spikes and event codes from the Open Ephys GUI's Event Broadcaster: an AcquisitionSource (contract/parts.py).

It subscribes to the broadcaster's PUB socket (format: acquisition/openephys.py) and gives the engine, on
the recording system's clock (time = sample_number / sample_rate):

- SpikeBatch: spikes of the rig file's `units` (neuron k is units[k] = (electrode, sorted_id), the
  sorted_id as the GUI's Spike Sorter numbers it), one batch per poll, consecutive `seq`, cumulative
  `total_spikes`. Unsorted spikes, units not in the map, and events of another stream or sample rate
  (another clock: the rig file's `stream`, else the first stream heard) are skipped and counted in
  `counters()`. The rate matches as the plugin sends it, a float32; a spike whose amplitudes are null or
  not finite is kept and counted.
- EventCode (clock "acquisition", trial_id -1, index -1): code words rebuilt from the TTL lines of one TTL
  channel (the rig file's `ttl_channel`, else the first heard; other channels' TTLs are counted and
  ignored) under the rig's scheme (acquisition/ttl.py); photodiode edges as PHOTODIODE. A word is given out
  once a TTL of a later sample on that channel shows its lines are all in, however its lines are split
  across polls. TTLs on other lines are counted.
- Heartbeat (role "acquisition"): a lower bound of the stream's clock, so that no spike in flight is cut
  off; an estimate, never proof that the GUI was recording (the engine collects a window only once a spike
  or TTL event stamped after it has come: controller/protocol.py, STREAM_PROOF). A message of sample time t that arrived at a (this part's clock) says the stream's
  clock is now at least t + (now - a); the heartbeat gives the best such bound over the last
  CLOCK_BOUND_WINDOW_S, less `clock_margin_ms` (how much later an earlier-sample event may arrive). A spike
  arriving behind an announced clock is counted (`late_spikes`).

On a wall clock, a stream silent for `stale_after_s` is taken as stopped: heartbeats stop and the engine ends
the session ("acquisition silent"). On a virtual clock the stream's clock is the latest sample less the margin.

SessionAbort ends the session when the stream's rate is not the rig's (RATE_EVIDENCE events of the clock's
stream, none at the rig's rate) or the plugin sends another output format (OTHER_FORMAT_EVIDENCE messages in
a row; the reason says which setting to change).

The broadcaster has no sequence numbers, so a lost message cannot be noticed here. This SUB socket keeps
every message it receives; the plugin's PUB socket keeps ZeroMQ's default send queue (1,000 messages), so a
burst beyond it is dropped in the GUI, unseen by any receiver (docs/live-rig.md).
"""

from __future__ import annotations

import logging
import time
from collections import deque

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from acquisition import openephys
from acquisition.config import OpenEphysConfig, TtlConfig
from acquisition.ttl import TtlDecoder
from contract import messages as m
from contract.parts import SessionAbort
from transport.zmq_parts import tell_session_over

log = logging.getLogger("cortexloop.openephys")

STREAM = "openephys"
ROLE = "acquisition"
MAX_MESSAGES_PER_POLL = 50_000  # a flood is taken over several polls; each poll's batch stays bounded
HEARTBEAT_S = 0.1  # at most this long between heartbeats while the stream is live (wall)
CLOCK_BOUND_WINDOW_S = 10.0  # arrivals this recent bound the stream's clock (older ones would let drift in)
SETTLE_S = 0.05  # after the connection, for the subscription to reach the publisher
RATE_EVIDENCE = 50  # events of the clock's stream at another rate, and none at the rig's: the rates differ
OTHER_FORMAT_EVIDENCE = 3  # messages in a row in another output format of the plugin: it is set to that
UNMAPPED_WARNING = 1000  # sorted spikes of units not in the map, with fewer mapped: the map is said to be wrong


class OpenEphysSource:
    """The AcquisitionSource of `cortex.source = "openephys"` (the module docstring says what it gives)."""

    def __init__(
        self,
        cfg: OpenEphysConfig,
        ttl: TtlConfig,
        endpoint: str,
        sample_rate_hz: float,
        clock,
        ctx: zmq.Context | None = None,
        control_endpoint: str | None = None,
    ):
        """endpoint: the Event Broadcaster's; sample_rate_hz: the rate its events must carry; clock: this part's
        own clock (controller/clocks.py); control_endpoint: the simulated recording system's event input, told
        when the session is over (None on a live rig)."""
        ctx = ctx or zmq.Context.instance()
        self.cfg = cfg
        self.endpoint = endpoint
        self.sample_rate = float(sample_rate_hz)
        self.clock = clock
        self.units = cfg.unit_map()
        # All events must count samples on one clock: one Open Ephys stream. The rig file may name it; if not,
        # the first stream heard is it, and events of any other are skipped and counted (never put on this clock).
        self.stream_name: str | None = cfg.stream or None
        self.n_neurons = len(cfg.units)
        if not 0 < self.n_neurons <= 65_536:
            raise ValueError(
                f"[cortex.openephys] units: {self.n_neurons} units; 1 to 65536 (neuron indices are uint16)"
            )
        self.margin_s = cfg.clock_margin_ms / 1000
        # The plugin sends the rate as a float32 widened to a double: rates equal as float32 are the same.
        self.rates_ok = {self.sample_rate, openephys.float32(self.sample_rate)}
        self.rate_mismatches = 0
        self.rates_heard: dict[tuple[str, float], int] = {}
        # Code words come from one TTL channel: the rig file's, or the first heard.
        self.ttl_channel: str | None = cfg.ttl_channel or None
        self.other_ttl_channels: dict[tuple[str, str], int] = {}
        self.other_format_run = 0
        self.other_format_messages = 0
        self.census: openephys.StreamCensus | None = None  # set by `check --live`: every message tallied
        self.decoder = TtlDecoder(ttl.lines())
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.setsockopt(zmq.RCVHWM, 0)  # nothing dropped here: a spike lost could not be noticed
        self.sub.setsockopt(zmq.MAXMSGSIZE, openephys.MAX_BODY_BYTES + 1024)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.monitor = self.sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self.sub.connect(endpoint)
        self.control = None
        if control_endpoint:
            self.control = ctx.socket(zmq.PUSH)
            self.control.setsockopt(zmq.LINGER, 500)
            self.control.connect(control_endpoint)
        self.info: dict = {}
        # The stream's clock.
        self.latest_sample: int | None = None
        self.bounds: deque = deque()  # (arrival on self.clock, latest sample time - arrival), one per poll
        self.last_message_at: float | None = None  # self.clock
        self.announced_s = -np.inf  # the clock the last heartbeat or batch gave the engine
        self.last_heartbeat_wall = -np.inf
        self.hb_seq = 0
        # What went out.
        self.batch_seq = 0
        self.total_spikes = 0
        self.last_end_s: float | None = None
        self.code_seq = 0
        # What was skipped, and why.
        self.malformed_messages = 0
        self.last_error = ""
        self.counts = {
            "spikes": 0,
            "unsorted_spikes": 0,
            "unknown_unit_spikes": 0,
            "late_spikes": 0,
            "foreign_events": 0,
            "ttl_events": 0,
            "words": 0,
            "photodiode_edges": 0,
            "other_channel_ttl_events": 0,
            "nonfinite_amplitude_spikes": 0,
        }
        self.unknown_units: dict[tuple[str, int], int] = {}

    # -- AcquisitionSource -------------------------------------------------------
    def describe(self, timeout_s: float = 60.0) -> dict:
        """The stream's description once this part is connected to the Event Broadcaster ({} if it does not
        answer within timeout_s): the neurons are the rig file's units."""
        if not self.info and self._wait_connected(timeout_s):
            self.info = {
                "n_neurons": self.n_neurons,
                "sample_rate_hz": self.sample_rate,
                "kind": "open ephys",
                "streams": [STREAM],
                "endpoint": self.endpoint,
                "photodiode": self.decoder.lines.photodiode_line is not None,
            }
            self.last_message_at = self.clock.now()  # staleness counts from the connection
        return self.info

    def poll(self, timeout_s: float = 0.0) -> list:
        frames_list = self._drain(timeout_s)
        if self.census is not None:
            self.census.add(frames_list)
        now = self.clock.now()
        neurons: list[int] = []
        samples: list[int] = []
        codes: list[m.EventCode] = []
        latest = self.latest_sample
        # The loop runs once per spike: names bound here, the common case first.
        decode, units, rates_ok, only_stream = openephys.decode_message, self.units, self.rates_ok, self.stream_name
        add_neuron, add_sample = neurons.append, samples.append
        nonfinite, channel = openephys.NONFINITE_AMPLITUDE, self.ttl_channel
        other_formats = 0
        for frames in frames_list:
            try:
                body = decode(frames)
            except openephys.OpenEphysFormatError as err:
                other_formats += self._malformed(err, frames)
                continue
            if body["sample_rate"] not in rates_ok or body["stream"] != only_stream:
                same_rate = self._same_rate(body["sample_rate"])
                if only_stream is None and same_rate:
                    only_stream = self.stream_name = body["stream"]  # the first stream heard is the clock
                else:
                    if not same_rate:
                        self._other_rate(body, latest is None)
                    self._foreign(body)  # another stream's samples count on another clock
                    continue
            sample = body["sample_number"]
            if latest is None or sample > latest:
                latest = sample
            if body["event_type"] == "spike":
                neuron = units.get((body["electrode"], body["sorted_id"]))
                if neuron is None:
                    self._skipped_spike(body)
                else:
                    add_neuron(neuron)
                    add_sample(sample)
                    if nonfinite in body:
                        self.counts["nonfinite_amplitude_spikes"] += 1
            else:
                if body["channel_name"] != channel:
                    if channel is None:
                        channel = self.ttl_channel = body["channel_name"]  # the first TTL channel heard
                    else:
                        self._other_channel(body)
                        continue
                self.counts["ttl_events"] += 1
                codes.extend(self._code(d) for d in self.decoder.feed(sample, body["line"], body["state"]))
        self._other_format_run(other_formats, len(frames_list))
        if frames_list:
            self.last_message_at = now
        self.latest_sample = latest
        if latest is not None and frames_list:
            bound = latest / self.sample_rate - now
            while self.bounds and self.bounds[-1][1] <= bound:  # never the best again: newer and no better
                self.bounds.pop()
            self.bounds.append((now, bound))
        clock_s = self._clock_bound(now)
        out: list = []
        if neurons:
            out.append(self._batch(neurons, samples))
        out.extend(codes)
        hb = self._heartbeat(now, clock_s)
        if hb is not None:
            out.append(hb)
        return out

    def waitables(self) -> list:
        return [self.sub]

    def malformed(self) -> int:
        return self.malformed_messages

    def counters(self) -> dict:
        """What arrived and what was skipped, for the session summary."""
        return {
            **self.counts,
            "stream": self.stream_name,
            "ttl_channel": self.ttl_channel,
            "other_ttl_channels": [[st, ch, n] for (st, ch), n in sorted(self.other_ttl_channels.items())[:32]],
            "rates_heard": [[st, r, n] for (st, r), n in sorted(self.rates_heard.items())[:32]],
            "other_format_messages": self.other_format_messages,
            "malformed_messages": self.malformed_messages,
            "unknown_line_events": self.decoder.unknown_line_events,
            "unknown_lines": sorted(self.decoder.unknown_lines)[:32],
            "unknown_units": [[e, u, n] for (e, u), n in sorted(self.unknown_units.items())[:32]],
        }

    def close(self) -> None:
        if self.control is not None:
            tell_session_over(self.control)
            self.control.close(linger=500)
        self._close_monitor()
        self.sub.close(linger=0)

    # -- inside ------------------------------------------------------------------
    def _wait_connected(self, timeout_s: float) -> bool:
        """Whether the Event Broadcaster has accepted this subscriber (ZeroMQ's handshake), within timeout_s."""
        if self.monitor is None:
            return True
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.monitor.poll(min(100.0, max(1.0, (end - time.monotonic()) * 1000))):
                event = recv_monitor_message(self.monitor)
                if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self._close_monitor()
                    time.sleep(SETTLE_S)  # the subscription travels to the publisher after the handshake
                    return True
        return False

    def _close_monitor(self) -> None:
        if self.monitor is not None:
            self.sub.disable_monitor()
            self.monitor.close(linger=0)
            self.monitor = None

    def _drain(self, timeout_s: float) -> list:
        out: list = []
        if timeout_s > 0 and not self.sub.poll(timeout_s * 1000):
            return out
        recv = self.sub.recv_multipart
        try:
            while len(out) < MAX_MESSAGES_PER_POLL:
                out.append(recv(zmq.NOBLOCK))
        except zmq.Again:
            pass
        return out

    def _malformed(self, err: Exception, frames) -> int:
        """Counts a message that did not decode; 1 if it is in another output format of the plugin, else 0."""
        self.malformed_messages += 1
        other = openephys.other_format(frames)
        if other is not None:
            self.other_format_messages += 1
            self.last_error = other
            return 1
        if self.malformed_messages == 1 or self.malformed_messages % 1000 == 0:
            log.warning("open ephys: malformed message dropped (%d so far): %s", self.malformed_messages, err)
        self.last_error = str(err)
        return 0

    def _other_format_run(self, other: int, n: int) -> None:
        """Ends the session once OTHER_FORMAT_EVIDENCE messages in a row were in another output format."""
        self.other_format_run = self.other_format_run + other if other == n else other
        if self.other_format_run >= OTHER_FORMAT_EVIDENCE:
            raise SessionAbort(f"open ephys: {self.endpoint} sends the {self.last_error}")

    def _same_rate(self, rate: float) -> bool:
        """Whether a rate the plugin sent is the rig's (equal as float32, as the GUI holds it)."""
        if np.float32(rate) == np.float32(self.sample_rate):
            self.rates_ok.add(rate)
            return True
        return False

    def _other_rate(self, body: dict, nothing_yet: bool) -> None:
        """An event at another rate; the session ends once the clock's stream has sent RATE_EVIDENCE of them and
        nothing at the rig's rate (the stream named, else any stream: none is the clock yet)."""
        key = (body["stream"], float(body["sample_rate"]))
        self.rates_heard[key] = self.rates_heard.get(key, 0) + 1
        if not nothing_yet or (self.stream_name is not None and body["stream"] != self.stream_name):
            return
        self.rate_mismatches += 1
        if self.rate_mismatches >= RATE_EVIDENCE:
            heard = ", ".join(f"{st!r} at {r:.10g} Hz" for (st, r) in sorted(self.rates_heard)[:8])
            raise SessionAbort(
                f"open ephys: the stream's sample rate is not the rig's: heard {heard} (the plugin sends each "
                f"stream's rate as a float32), but session.acquisition_sample_rate_hz = {self.sample_rate:.10g} Hz; "
                "set it to the stream's rate"
                + ("" if self.stream_name else " or name the stream ([cortex.openephys] stream)")
            )

    def _other_channel(self, body: dict) -> None:
        self.counts["other_channel_ttl_events"] += 1
        key = (body["stream"], body["channel_name"])
        if key not in self.other_ttl_channels and len(self.other_ttl_channels) < 256:
            log.warning(
                "open ephys: TTLs of channel %r are ignored: code words come from channel %r "
                "([cortex.openephys] ttl_channel)",
                body["channel_name"],
                self.ttl_channel,
            )
            self.other_ttl_channels[key] = 0
        if key in self.other_ttl_channels:
            self.other_ttl_channels[key] += 1

    def _foreign(self, body: dict) -> None:
        self.counts["foreign_events"] += 1
        if self.counts["foreign_events"] == 1:
            log.warning(
                "open ephys: events of stream %r at %s Hz skipped: this session's clock is stream %r at "
                "%s Hz ([cortex.openephys] stream, session.acquisition_sample_rate_hz)",
                body["stream"],
                body["sample_rate"],
                self.stream_name,
                self.sample_rate,
            )

    def _skipped_spike(self, body: dict) -> None:
        key = (body["electrode"], body["sorted_id"])
        if key[1] == 0:
            self.counts["unsorted_spikes"] += 1
            return
        self.counts["unknown_unit_spikes"] += 1
        if key in self.unknown_units or len(self.unknown_units) < 1024:
            self.unknown_units[key] = self.unknown_units.get(key, 0) + 1
        if self.counts["unknown_unit_spikes"] == UNMAPPED_WARNING and self.counts["spikes"] < UNMAPPED_WARNING:
            top = sorted(self.unknown_units.items(), key=lambda kv: -kv[1])[:8]
            log.warning(
                "open ephys: most sorted spikes come from units not in [cortex.openephys] units, e.g. %s; the "
                "Spike Sorter numbers units with one counter over all electrodes (cortexloop check RIG --live "
                "lists the units it hears)",
                ", ".join(f"({e!r}, {u})" for (e, u), _ in top),
            )

    def _code(self, decoded) -> m.EventCode:
        self.code_seq += 1
        if decoded.kind == "photodiode":
            self.counts["photodiode_edges"] += 1
            code = m.Codes.PHOTODIODE
        else:
            self.counts["words"] += 1
            code = decoded.value
        return m.EventCode(
            stream=STREAM, seq=self.code_seq, code=code, time_s=decoded.sample / self.sample_rate, clock="acquisition"
        )

    def _batch(self, neurons: list, samples: list) -> m.SpikeBatch:
        times = np.asarray(samples, np.float64) / self.sample_rate
        late = int(np.count_nonzero(times < self.announced_s))
        if late:
            self.counts["late_spikes"] += late
            log.warning(
                "open ephys: %d spike(s) arrived after the stream's clock had passed them "
                "(clock_margin_ms %.0f is less than the stream's delivery jitter)",
                late,
                self.cfg.clock_margin_ms,
            )
        self.batch_seq += 1
        self.total_spikes += len(neurons)
        self.counts["spikes"] += len(neurons)
        # Known up to the latest sample less the margin; the batch holds the spikes received since the last one.
        end = self.latest_sample / self.sample_rate - self.margin_s
        start = self.last_end_s if self.last_end_s is not None else min(end, float(times.min()))
        end = max(end, start)
        self.last_end_s = end
        self.announced_s = max(self.announced_s, end)
        return m.SpikeBatch(
            stream=STREAM,
            seq=self.batch_seq,
            t_start_s=start,
            t_end_s=end,
            total_spikes=self.total_spikes,
            neuron=np.asarray(neurons, np.uint16),
            time_s=times,
        )

    def _clock_bound(self, now: float) -> float | None:
        """How far the stream's clock has surely got (less the margin); None before any message."""
        while len(self.bounds) > 1 and now - self.bounds[0][0] > CLOCK_BOUND_WINDOW_S:
            self.bounds.popleft()
        if not self.bounds:
            return None
        return now + self.bounds[0][1] - self.margin_s  # the best bound first (a monotonic queue)

    def _heartbeat(self, now: float, clock_s: float | None) -> m.Heartbeat | None:
        if self.last_message_at is None or now - self.last_message_at >= self.cfg.stale_after_s:
            return None  # not connected, or the stream stopped: the engine notices the silence
        wall = time.monotonic()
        advanced = clock_s is not None and clock_s > self.announced_s
        if not advanced and wall - self.last_heartbeat_wall < HEARTBEAT_S:
            return None
        self.last_heartbeat_wall = wall
        self.hb_seq += 1
        if clock_s is None:  # connected, nothing received yet: alive, but no clock to give
            return m.Heartbeat(role=ROLE, seq=self.hb_seq, clock_s=0.0, info=dict(self.info))
        self.announced_s = max(self.announced_s, clock_s)
        return m.Heartbeat(role=ROLE, seq=self.hb_seq, clock_s=self.announced_s, stream=STREAM, info=dict(self.info))
