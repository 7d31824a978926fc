"""A stop signal whose exception is swallowed where it lands still stops the session."""

import signal

import pytest

from controller.session import run_controller
from controller.worlds import in_process_parts
from tests.helpers import small_rig


class _SignalOnCollect:
    """Sends SIGTERM to this process from a finalizer: Python runs the handler there, and an exception raised
    inside a finalizer is printed ("Exception ignored") and dropped, as one raised in a zmq frame's __dealloc__ is."""

    def __del__(self):
        signal.raise_signal(signal.SIGTERM)


def _session_stopped_by_a_swallowed_sigterm(session_dir):
    rig = small_rig(n_trials=30)
    parts = in_process_parts(rig)
    poll = parts.presenter.poll
    sent = []

    def poll_then_signal(timeout_s=0.0):
        msgs = poll(timeout_s)
        if not sent and any(getattr(msg, "status", "") == "done" for msg in msgs):
            sent.append(True)
            _SignalOnCollect()  # dropped at once: its finalizer runs here
        return msgs

    parts.presenter.poll = poll_then_signal
    summary = run_controller(rig, session_dir, parts, quiet=True)
    assert sent
    return summary


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the point of the test
def test_a_sigterm_swallowed_by_a_finalizer_still_ends_the_session(tmp_path):
    summary = _session_stopped_by_a_swallowed_sigterm(tmp_path / "s")
    assert summary["status"] == "interrupted (SIGTERM)", summary["status"]
    assert summary["trials_done"] < 30


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_the_status_names_the_launchers_own_interrupt(tmp_path):
    # Ctrl-C reaches the launcher (SIGINT), which writes why and sends the controller SIGTERM.
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "stop_reason").write_text("interrupted (SIGINT)")
    assert _session_stopped_by_a_swallowed_sigterm(tmp_path / "s")["status"] == "interrupted (SIGINT)"
