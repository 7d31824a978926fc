"""Presenters: the PsychoPy window and a headless stand-in with the same interface.

make_presenter() picks one from the rig's display section:

- "headless": always the headless presenter (paced by the clock it is handed:
  the wall clock, or a virtual clock that counts frames).
- "psychopy": always a PsychoPy window. A window shows frames only while time
  passes, so asking for it with a virtual clock (`--speed max`) is an error.
- "auto": PsychoPy when the clock is the wall clock and a window can really
  be opened here, headless otherwise. "Can be opened" is tested by opening and
  closing a hidden pyglet window in a child process with a time limit, so a
  broken display (no $DISPLAY, a dead X server, a 16-bit Xvfb on which pyglet
  hangs) can neither crash nor hang the presenter process.
"""

from __future__ import annotations

import os
import subprocess
import sys

from stimulus.config import DisplayConfig
from stimulus.presenters.base import Presenter
from stimulus.presenters.headless import HeadlessPresenter

_PROBE = "import pyglet; w = pyglet.window.Window(width=64, height=64, visible=False); w.close()"


def display_available(timeout_s: float = 15.0) -> tuple[bool, str]:
    """Whether a window can be opened on this machine's display, and why not if not."""
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return False, "no $DISPLAY"
    try:
        probe = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, timeout=timeout_s, text=True)
    except subprocess.TimeoutExpired:
        return False, f"opening a test window did not finish in {timeout_s:g} s"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
        return False, f"a test window could not be opened: {last}"
    return True, "a test window opened"


def choose_presenter_kind(display: DisplayConfig, clock) -> tuple[str, str]:
    """("psychopy" or "headless", the reason), as make_presenter would decide."""
    if display.presenter == "headless":
        return "headless", "display.presenter is headless"
    if display.presenter == "psychopy":
        if not clock.passes_while_waiting:
            raise ValueError(
                'display.presenter "psychopy" needs session.speed "realtime": '
                'a window cannot run on a virtual clock (use presenter "headless" or "auto")'
            )
        return "psychopy", "display.presenter is psychopy"
    if not clock.passes_while_waiting:
        return "headless", "virtual clock (speed max)"
    ok, why = display_available()
    return ("psychopy" if ok else "headless"), why


def make_presenter(display: DisplayConfig, clock, grab_onset_frames: bool = False) -> Presenter:
    """A presenter for the rig's display section (not opened yet: call open() in the presenter process).

    clock: controller.clocks.WallClock or VirtualClock (anything with now, sleep_until, name and
    passes_while_waiting)."""
    kind, _ = choose_presenter_kind(display, clock)
    if kind == "psychopy":
        from stimulus.presenters.psychopy_window import PsychoPyPresenter

        return PsychoPyPresenter(display, grab_onset_frames=grab_onset_frames)
    return HeadlessPresenter(display.refresh_hz, clock)


__all__ = ["HeadlessPresenter", "Presenter", "choose_presenter_kind", "display_available", "make_presenter"]
