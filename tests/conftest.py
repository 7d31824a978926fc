"""Shared fixtures: a display for PsychoPy windows, with PsychoPy's files kept out of $HOME.

pytest-xvfb (configured in pyproject.toml at 24-bit depth; at 16-bit pyglet
hangs) starts Xvfb and sets $DISPLAY for the whole run. Tests that open a
window ask for `psychopy_display`; it skips them, saying why, where there is
neither Xvfb nor a display.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest


def _no_display_reason() -> str | None:
    if os.environ.get("DISPLAY"):
        return None
    if shutil.which("Xvfb") is None:
        return "no display: Xvfb is not installed and $DISPLAY is not set"
    return "no display: $DISPLAY is not set (is pytest-xvfb installed and not disabled with --no-xvfb?)"


@pytest.fixture(autouse=True)
def _denormals_restored():
    """A model built in this process flushes denormal floats (models/online.py, for speed): process-wide state
    that would leak into later tests (hypothesis refuses to generate floats under it)."""
    yield
    if "torch" in sys.modules:
        sys.modules["torch"].set_flush_denormal(False)


@pytest.fixture(scope="session")
def psychopy_display():
    """Skip without a display; otherwise import psychopy.visual with $HOME in a temp dir.

    PsychoPy reads and writes $HOME/.psychopy3 when it is first imported and keeps
    those paths, so $HOME is pointed elsewhere only for that import.
    """
    reason = _no_display_reason()
    if reason:
        pytest.skip(reason)
    if "psychopy" not in sys.modules:
        home = tempfile.mkdtemp(prefix="cortexloop-psychopy-home-")
        old_home = os.environ.get("HOME")
        os.environ["HOME"] = home
        try:
            import psychopy.visual  # noqa: F401  (loads prefs from the temp home)
        finally:
            if old_home is None:
                os.environ.pop("HOME", None)
            else:
                os.environ["HOME"] = old_home
    return os.environ["DISPLAY"]


@pytest.fixture
def small_display():
    """A 400x300 window, 120 Hz so trials are short; 20 cm wide (0.05 cm a pixel) at 57 cm."""
    from stimulus.config import DisplayConfig

    return DisplayConfig(
        presenter="psychopy",
        resolution_px=(400, 300),
        refresh_hz=120.0,
        screen_width_cm=20.0,
        viewing_distance_cm=57.0,
        image_size_deg=5.0,
        image_pos_deg=(3.0, -1.0),
        fixation_size_deg=0.3,
        photodiode_size_px=30,
        photodiode_corner="bottom_right",
        frame_pacing="software",
    )


@pytest.fixture
def engine(tmp_path):
    """The session engine of tests.helpers.small_rig over in-process parts, started, on a store in tmp_path."""
    from controller.engine import SessionEngine
    from controller.worlds import in_process_parts
    from records.store import SessionStore
    from stimulus.pools import make_pools
    from tests.helpers import small_rig

    rig = small_rig()
    parts = in_process_parts(rig)
    store = SessionStore.create(tmp_path / "e", rig.model_dump_json())
    eng = SessionEngine(rig, store, parts, make_pools(rig.images))
    eng.start()
    yield eng
    eng.close()
    store.close()


@pytest.fixture(scope="session")
def recorded(tmp_path_factory):
    """(rig, session dir, summary) of one short multi-process session at max speed (cortexloop run: cortex, model
    worker, presenter and controller processes on loopback), run once per test run (made_once) and read by the
    session, replay and in-process-against-processes tests. The model's form is "stacked", not "auto" (which times both
    forms on this machine and could pick either), so an in-process run of the same rig records the same."""
    from controller.config import with_overrides
    from tests.helpers import made_once, small_rig
    from transport.launch import run_session

    rig = with_overrides(small_rig(), model={"form": "stacked", "steps_per_trial": 5})
    where, summary = made_once(tmp_path_factory, "recorded", lambda d: run_session(rig, d / "s"))
    return rig, where / "s", summary


@pytest.fixture(scope="session")
def short_session(tmp_path_factory):
    """(rig, session dir, summary) of one short session (tests.helpers.short_rig), run once per test run
    (made_once) and read by the report and NWB tests. Its parts run in this process: what those tests read is the store, and an
    in-process session stores what the same rig stores across processes (tests/controller/test_engine.py)."""
    from controller.session import run_in_process
    from tests.helpers import made_once, short_rig

    rig = short_rig()
    where, summary = made_once(tmp_path_factory, "short", lambda d: run_in_process(rig, d / "s")[0])
    return rig, where / "s", summary


@pytest.fixture(scope="session")
def lsl_on_this_machine(tmp_path_factory):
    """liblsl's discovery kept on this machine, IPv6 off (its default multicasts off the host): lsl_api.cfg in a
    temp dir, named by $LSLAPICFG for this process and the processes it starts. liblsl reads the file once, so it
    is set before a test makes or resolves its first stream and left in place for the run."""
    from acquisition.lsl_source import use_lsl_config

    old = os.environ.get("LSLAPICFG")
    path = use_lsl_config(tmp_path_factory.mktemp("lsl"))
    yield path
    if old is None:
        os.environ.pop("LSLAPICFG", None)
    else:
        os.environ["LSLAPICFG"] = old
