"""`cortexloop check RIG --live`: before a recording day, see that each part of the rig is there and working.

Each line says OK, WARN or FAIL, and what was seen:

- acquisition: waits for the stream the rig file names, then counts each unit's spikes for a few seconds
  (a silent unit is a WARN: a lost electrode, a wrong unit map);
- event output: writes a test code word through the rig's event output and waits for the acquisition
  system to record it (the whole path: presenter machine, cable or socket, recording system, stream);
- display: opens the rig's presenter and says what refresh it measured against the one configured.

The same parts a session uses are used here (controller/worlds.py), on the wall clock.
"""

from __future__ import annotations

import time

import numpy as np

from contract import messages as m
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
    try:
        info = source.describe(wait_s)
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
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            for msg in source.poll(0.05):
                if isinstance(msg, m.SpikeBatch):
                    np.add.at(counts, np.asarray(msg.neuron, np.int64), 1)
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
    finally:
        source.close()
    return "FAIL" not in statuses
