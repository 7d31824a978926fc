"""`cortexloop check RIG --live`: before a recording day, see that each part of the rig is there and working.

Each line says OK, WARN or FAIL, and what was seen:

- acquisition: waits for the stream the rig file names, then counts each unit's spikes for a few seconds
  (a silent unit is a WARN: a lost electrode, a wrong unit map);
- Open Ephys (source "openephys"), from every message heard: the streams and their rates against the rig's,
  the units heard (electrode, sorted_id, rate) beside the unit map (FAIL when a mapped unit is silent or most
  sorted spikes come from units not in it), the TTL channels and their lines, the plugin's output format (FAIL,
  with the setting to change, when it is not JSON), and the largest burst against the plugin's send queue;
- event output: writes a test code word through the rig's event output and waits for the acquisition
  system to record it (the whole path: presenter machine, cable or socket, recording system, stream);
- display: opens the rig's presenter and says what refresh it measured against the one configured.

The same parts a session uses are used here (controller/worlds.py), on the wall clock.
"""

from __future__ import annotations

import time

import numpy as np

from contract import messages as m
from contract.parts import SessionAbort
from controller.clocks import WallClock
from controller.config import RigConfig, with_overrides

# A code the presenter never sends in a trial, so a recording shows where the check wrote it.
TEST_CODE = 1


def _line(status: str, part: str, text: str, out) -> str:
    out(f"{status:<4} {part}: {text}")
    return status


def check_live(
    rig: RigConfig, endpoints: dict[str, str], seconds: float = 3.0, wait_s: float = 15.0, out=print
) -> bool:
    """Runs the three checks; returns True when none failed."""
    from controller.worlds import acquisition_part
    from stimulus.presenters import make_presenter
    from transport.processes.presenter import make_rig_event_output

    rig = with_overrides(rig, session={"speed": "realtime"})  # a live check runs on the wall clock
    statuses = []
    source = acquisition_part(rig, endpoints)
    census = None
    try:
        try:
            info = source.describe(wait_s)
        except SessionAbort as why:  # a duplicate stream name, a stream of the wrong shape: what a session stops on
            statuses.append(_line("FAIL", "acquisition", str(why), out))
            return False
        if not info or "n_neurons" not in info:
            statuses.append(
                _line(
                    "FAIL",
                    "acquisition",
                    f"no stream described itself within {wait_s:.0f} s "
                    f"(source {rig.cortex.source!r}); is the recording system running and publishing?",
                    out,
                )
            )
            return False
        n = int(info["n_neurons"])
        counts = np.zeros(n, np.int64)
        codes: list[float] = []
        if rig.cortex.source == "openephys":
            from acquisition.openephys import StreamCensus

            census = source.census = StreamCensus()
            census_t0 = time.monotonic()
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < seconds:
                for msg in source.poll(0.05):
                    if isinstance(msg, m.SpikeBatch):
                        np.add.at(counts, np.asarray(msg.neuron, np.int64), 1)
        except SessionAbort as why:  # another output format, another rate: what a session would stop on
            statuses.append(_line("FAIL", "acquisition", str(why), out))
            if census is not None:
                statuses += openephys_lines(rig, census, source, time.monotonic() - census_t0, out)
            return False
        rates = counts / seconds
        silent = np.flatnonzero(counts == 0).tolist()
        text = (
            f"{n} units, {int(counts.sum())} spikes in {seconds:g} s; rate per unit median "
            f"{np.median(rates) if n else 0:.1f} Hz (min {rates.min() if n else 0:.1f}, max "
            f"{rates.max() if n else 0:.1f})"
        )
        if n == 0 or counts.sum() == 0:
            statuses.append(_line("FAIL", "acquisition", text + ": no spikes", out))
        elif silent:
            statuses.append(
                _line(
                    "WARN",
                    "acquisition",
                    text + f"; silent units {silent[:20]}" + (" ..." if len(silent) > 20 else ""),
                    out,
                )
            )
        else:
            statuses.append(_line("OK", "acquisition", text, out))

        clock = WallClock()
        screen = make_presenter(rig.display, clock)
        screen.open()
        try:
            events = make_rig_event_output(rig, endpoints, screen, None)
            try:
                events.write(TEST_CODE, screen.now(), -1, -1, "")
                end = time.monotonic() + 2.0
                while time.monotonic() < end and not codes:
                    for msg in source.poll(0.05):
                        if isinstance(msg, m.EventCode) and msg.code == TEST_CODE:
                            codes.append(msg.time_s)
                kind = rig.event_output.kind
                if codes:
                    statuses.append(
                        _line(
                            "OK",
                            "event output",
                            f"test code {TEST_CODE} written ({kind}) and recorded "
                            f"by the acquisition system at {codes[0]:.4f} s on its clock",
                            out,
                        )
                    )
                else:
                    statuses.append(
                        _line(
                            "FAIL",
                            "event output",
                            f"test code {TEST_CODE} written ({kind}) but not "
                            f"recorded within 2 s: check the cable, the lines ([cortex.ttl]) and the "
                            f"recording system's digital inputs",
                            out,
                        )
                    )
            finally:
                events.close()
            measured = screen.measured_refresh_hz
            if measured is None:
                statuses.append(
                    _line(
                        "OK",
                        "display",
                        f"{type(screen).__name__} ({screen.pacing}): no window to "
                        f"measure; frames paced at {screen.refresh_hz:g} Hz",
                        out,
                    )
                )
            else:
                off = abs(measured - screen.refresh_hz) / screen.refresh_hz
                statuses.append(
                    _line(
                        "OK" if off < 0.01 else "WARN",
                        "display",
                        f"{type(screen).__name__}: measured {measured:.2f} Hz, configured "
                        f"{screen.refresh_hz:g} Hz ({screen.pacing} pacing)",
                        out,
                    )
                )
        except Exception as err:  # a window that cannot open, a port that cannot: said, not raised
            statuses.append(_line("FAIL", "display/event output", f"{type(err).__name__}: {err}", out))
        finally:
            screen.close()
        if census is not None:
            statuses += openephys_lines(rig, census, source, time.monotonic() - census_t0, out)
    finally:
        source.close()
    return "FAIL" not in statuses


MAX_UNIT_LINES = 64


def openephys_lines(rig: RigConfig, census, source, seconds: float, out) -> list[str]:
    """What the Open Ephys stream carried (acquisition/openephys.py's StreamCensus), one part per line, beside
    the rig file's expectations; returns the statuses."""
    from acquisition.openephys import PLUGIN_SEND_QUEUE, float32

    oe = rig.cortex.openephys
    rate = rig.session.acquisition_sample_rate_hz
    statuses = []
    for other, k in census.formats.items():
        statuses.append(_line("FAIL", "format", f"{k} message(s) of the {other}", out))
    if not census.streams:
        statuses.append(_line("FAIL", "streams", "no JSON event heard from the Event Broadcaster", out))
        return statuses
    heard = ", ".join(f"{st!r} at {r:.10g} Hz ({k} events)" for (st, r), k in sorted(census.streams.items()))
    at_rate = [st for (st, r) in census.streams if float32(r) == float32(rate)]
    clock = source.stream_name or (oe.stream or (at_rate[0] if at_rate else None))
    if not at_rate or (oe.stream and oe.stream not in at_rate):
        statuses.append(
            _line(
                "FAIL",
                "streams",
                f"{heard}; none {'named ' + repr(oe.stream) + ' ' if oe.stream else ''}at the rig's "
                f"session.acquisition_sample_rate_hz = {rate:.10g} Hz (the plugin sends rates as float32)",
                out,
            )
        )
    else:
        statuses.append(_line("OK", "streams", f"{heard}; the session's clock: {clock!r}", out))
    if clock is not None:  # no stream at the rig's rate: its units and channels are not the session's
        statuses += _unit_lines(oe, census, clock, seconds, out)
        statuses += _ttl_lines(oe, census, clock, source, out)
    peak = census.peak_burst
    statuses.append(
        _line(
            "OK" if peak < PLUGIN_SEND_QUEUE // 2 else "WARN",
            "send queue",
            f"at most {peak} messages within {census.burst_s * 1000:.0f} ms of stream time; the plugin's send queue "
            f"holds {PLUGIN_SEND_QUEUE:,} messages and drops a burst beyond it in the GUI, unseen by any receiver "
            "(docs/live-rig.md, Open Ephys)",
            out,
        )
    )
    return statuses


def _unit_lines(oe, census, clock, seconds: float, out) -> list[str]:
    mapped = oe.unit_map()
    heard = {(e, u): k for (st, e, u), k in census.units.items() if st == clock}
    silent = [key for key in mapped if key not in heard]
    unmapped = sum(k for key, k in heard.items() if key not in mapped)
    total = sum(heard.values())
    text = (
        f"{len(mapped)} in the map, {len(mapped) - len(silent)} heard; {len(heard)} sorted units heard in "
        f"{seconds:.1f} s, {unmapped} of {total} sorted spikes from units not in the map; "
        f"{census.unsorted.get(clock, 0)} unsorted spikes; {census.nonfinite_amplitudes} with a null amplitude "
        "(kept). sorted_id is the Spike Sorter's: one counter over all electrodes"
    )
    status = "FAIL" if silent or total == 0 or unmapped * 2 > total else "OK"
    statuses = [_line(status, "units", text, out)]
    rows = sorted(set(mapped) | set(heard), key=lambda key: (mapped.get(key, 1 << 30), key[1], key[0]))
    for electrode, sorted_id in rows[:MAX_UNIT_LINES]:
        k = heard.get((electrode, sorted_id), 0)
        where = (
            f"neuron {mapped[(electrode, sorted_id)]}" + (" SILENT" if k == 0 else "")
            if (electrode, sorted_id) in mapped
            else "not in the map"
        )
        out(f"       {electrode:<20} sorted_id {sorted_id:<6} {k / max(seconds, 1e-9):8.1f} Hz   {where}")
    if len(rows) > MAX_UNIT_LINES:
        out(f"       ... {len(rows) - MAX_UNIT_LINES} more")
    return statuses


def _ttl_lines(oe, census, clock, source, out) -> list[str]:
    channels = {ch: v for (st, ch), v in census.ttl_channels.items() if st == clock}
    if not channels:
        return [_line("WARN", "ttl channels", f"no TTL heard on stream {clock!r}", out)]
    code_channel = oe.ttl_channel or source.ttl_channel
    text = "; ".join(
        f"{ch!r}: lines {sorted(v['lines'])}, {v['events']} events" + (" (code words)" if ch == code_channel else "")
        for ch, v in sorted(channels.items())
    )
    if oe.ttl_channel and oe.ttl_channel not in channels:
        return [_line("FAIL", "ttl channels", f"{text}; none is ttl_channel = {oe.ttl_channel!r}", out)]
    if not oe.ttl_channel and len(channels) > 1:
        return [_line("WARN", "ttl channels", f"{text}; name the code channel: [cortex.openephys] ttl_channel", out)]
    return [_line("OK", "ttl channels", text, out)]
