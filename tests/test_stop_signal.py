"""A stop signal whose exception is swallowed where it lands still stops the session."""
import signal

import pytest

from controller.session import run_controller
from controller.worlds import in_process_parts
from tests.test_session import small_rig


class _SignalOnCollect:
    """Sends SIGTERM to this process from a finalizer: Python runs the handler there, and an exception raised
    inside a finalizer is printed ("Exception ignored") and dropped, as one raised in a zmq frame's __dealloc__ is."""

    def __del__(self):
        signal.raise_signal(signal.SIGTERM)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the point of the test
def test_a_sigterm_swallowed_by_a_finalizer_still_ends_the_session(tmp_path):
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
    summary = run_controller(rig, tmp_path / "s", parts, quiet=True)
    assert sent
    assert summary["status"] == "interrupted (SIGTERM)", summary["status"]
    assert summary["trials_done"] < 30
