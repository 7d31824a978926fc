"""The live status of a running session: a panel on a terminal, plain lines elsewhere, a warning when plans fall back."""

import io
import os
import pty
import select
import sys
import time

from controller.config import with_overrides
from controller.session import run_controller
from controller.status import StatusBoard
from controller.worlds import in_process_parts
from tests.helpers import ROOT, SilentModel, small_rig


def test_plain_status_lines_and_a_warning_when_plans_fall_back(tmp_path):
    rig = with_overrides(
        small_rig(n_trials=3), trial={"virtual_plan_timeout_s": 0.2}, fixation={"break_probability": 0.0}
    )
    parts = in_process_parts(rig)
    parts.model = SilentModel()
    out = io.StringIO()
    board = StatusBoard(rig.session.n_trials, stream=out, every_s=0.0, plain_every_s=0.0)
    summary = run_controller(rig, tmp_path / "s", parts, quiet=True, board=board)
    text = out.getvalue()
    assert summary["plans_late"] == 3
    warnings = [line for line in text.splitlines() if line.startswith("WARNING: plan")]
    # One line as soon as the board sees late plans (two in one redraw share a line), the count in it.
    assert 1 <= len(warnings) <= 3 and "pool images shown instead (3 so far)" in warnings[-1]
    status = [line for line in text.splitlines() if line.startswith("status: ")]
    assert status and "trials 3/3 done, 0 aborted" in status[-1] and "plans on time 0/3 (3 from the pool)" in status[-1]
    assert "\x1b[" not in text  # no terminal control codes in a log


def test_a_terminal_gets_a_live_panel_then_the_summary(tmp_path):
    rig = with_overrides(small_rig(n_trials=4), model={"kind": "baseline"})
    (tmp_path / "rig.json").write_text(rig.model_dump_json())
    pid, fd = pty.fork()
    if pid == 0:  # the child: `cortexloop run` on a pseudo-terminal, as a person would start it
        os.environ["PYTHONPATH"] = str(ROOT)
        os.execv(
            sys.executable,
            [
                sys.executable,
                "-m",
                "controller.cli",
                "run",
                str(tmp_path / "rig.json"),
                "--session-dir",
                str(tmp_path / "s"),
            ],
        )
    buf, end = b"", time.monotonic() + 240
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            buf += data
    _, status = os.waitpid(pid, 0)
    text = buf.decode(errors="replace")
    assert os.WEXITSTATUS(status) == 0, text[-2000:]
    assert "cortexloop session" in text and "plans on time" in text and "spikes/s" in text
    assert "\x1b[" in text  # redrawn in place
    assert text.index("plans on time") < text.index("cortexloop session summary")


def test_the_status_latency_percentiles_are_in_order_with_few_trials():
    from types import SimpleNamespace

    board = StatusBoard(8, stream=io.StringIO())
    engine = SimpleNamespace(
        trial_reports={},
        streams={},
        plans_on_time=2,
        plans_late=0,
        latencies_s=[0.198, 0.296],
        model_version_seen=0,
        dropped_frames=0,
    )
    p50, p99 = board.figures(engine)["loop latency p50/p99"].removesuffix(" ms").split(" / ")
    assert int(p50) == 247 and int(p99) == 295  # the summary's (interpolated) percentiles
